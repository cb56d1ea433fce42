//! The appliance's TPM: the sealed record MAC key, the monotonic NV counter, and the
//! non-exportable ECDSA P-256 key that signs checkpoints and export manifests.
//!
//! Key material never leaves the TPM except the MAC key, which is unsealed into memory at
//! start and only if the boot state (the configured PCRs) is what it was when sealed. The
//! storage root key is re-derived deterministically at every start, so only the wrapped
//! blobs of our two objects are kept on disk (`key_dir`); they are useless without this TPM.
//!
//! **Concurrency:** a [`Tpm`] owns one TCTI connection and is used from one thread at a time;
//! the record store is the single writer and the only user.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use p256::ecdsa::VerifyingKey;
use thiserror::Error;
use tss_esapi::attributes::{
    NvIndexAttributesBuilder, ObjectAttributesBuilder, SessionAttributesBuilder,
};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EccScheme, HashScheme, HashcheckTicket, KeyedHashScheme, NvPublicBuilder,
    PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData, Signature,
    SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, constants::tss::TPM2_RH_NULL, tss2_esys::TPMT_TK_HASHCHECK};
use zeroize::Zeroizing;

use galen_record::Hash;

/// The record MAC key, wiped from memory when dropped.
pub type MacKey = Zeroizing<[u8; 32]>;

/// Where the TPM is and how the appliance uses it.
#[derive(Debug, Clone)]
pub struct TpmConfig {
    /// A TCTI string: `device:/dev/tpmrm0` on the appliance, `swtpm:path=…` in tests.
    pub tcti: String,
    /// Where the wrapped key blobs live (on the data partition).
    pub key_dir: PathBuf,
    /// The NV index of the checkpoint counter (owner range 0x0150_0000–0x015F_FFFF).
    pub nv_index: u32,
    /// PCRs the MAC key is sealed to. PCR 7 (Secure Boot state) on the appliance.
    pub pcrs: Vec<u8>,
}

#[derive(Debug, Error)]
pub enum TpmError {
    #[error("cannot reach the TPM at {tcti}: {source}")]
    Connect { tcti: String, source: tss_esapi::Error },
    #[error("the TPM refused {op}: {source}")]
    Command { op: &'static str, source: tss_esapi::Error },
    #[error(
        "the record key cannot be unsealed: the boot state (PCRs {pcrs:?}) is not the one it was \
         sealed to; records are kept untouched for investigation"
    )]
    PolicyMismatch { pcrs: Vec<u8>, source: tss_esapi::Error },
    #[error("TPM key file {}: {source}", path.display())]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("TPM gave an unexpected answer to {0}")]
    Unexpected(&'static str),
    #[error("PCR {0} does not exist")]
    BadPcr(u8),
}

fn cmd(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { op, source }
}

/// An open connection to the appliance's TPM with its keys loaded.
pub struct Tpm {
    ctx: Context,
    srk: KeyHandle,
    signer: KeyHandle,
    verifying_key: VerifyingKey,
    nv: NvIndexHandle,
    config: TpmConfig,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.config.tcti).finish_non_exhaustive()
    }
}

const SIGNER: &str = "checkpoint-key";
const SEALED: &str = "record-key";

impl Tpm {
    /// Connects, derives the storage root key, and loads (creating on first use) the
    /// checkpoint key and the NV counter.
    pub fn open(config: &TpmConfig) -> Result<Self, TpmError> {
        let connect = |source| TpmError::Connect { tcti: config.tcti.clone(), source };
        let tcti = TctiNameConf::from_str(&config.tcti).map_err(connect)?;
        let mut ctx = Context::new(tcti).map_err(connect)?;
        let (objects, sessions) = flush_stale(&mut ctx)?;
        if objects + sessions > 0 {
            tracing::warn!(objects, sessions, "flushed what a previous run left loaded in the TPM");
        }
        // Parameter encryption, so the unsealed key does not cross the bus in clear.
        let session = hmac_session(&mut ctx)?;
        ctx.set_sessions((Some(session), None, None));
        std::fs::create_dir_all(&config.key_dir)
            .map_err(|source| TpmError::KeyFile { path: config.key_dir.clone(), source })?;

        let srk = ctx
            .create_primary(Hierarchy::Owner, srk_template()?, None, None, None, None)
            .map_err(cmd("creating the storage root key"))?
            .key_handle;
        let signer = load_or_create(&mut ctx, srk, &config.key_dir, SIGNER, |ctx| {
            let r = ctx
                .create(srk, signer_template()?, None, None, None, None)
                .map_err(cmd("creating the checkpoint key"))?;
            Ok((r.out_public, r.out_private))
        })?;
        let (public, _, _) = ctx.read_public(signer).map_err(cmd("reading the checkpoint key"))?;
        let verifying_key = verifying_key(&public)?;
        let nv = counter_handle(&mut ctx, config.nv_index)?;
        Ok(Self { ctx, srk, signer, verifying_key, nv, config: config.clone() })
    }

    /// The public half of the checkpoint key, which inspectors verify against.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying_key
    }

    /// Unseals the record MAC key; on first use, creates 32 random bytes in the TPM and seals
    /// them to the configured PCRs.
    pub fn unseal_mac_key(&mut self) -> Result<MacKey, TpmError> {
        let pcrs = pcr_selection(&self.config.pcrs)?;
        let srk = self.srk;
        let dir = self.config.key_dir.clone();
        let sealed = load_or_create(&mut self.ctx, srk, &dir, SEALED, |ctx| {
            let digest = trial_policy(ctx, pcrs.clone())?;
            let secret = ctx.get_random(32).map_err(cmd("generating the record key"))?;
            let secret = SensitiveData::try_from(secret.value().to_vec())
                .map_err(|_| TpmError::Unexpected("GetRandom"))?;
            let r = ctx
                .create(srk, sealed_template(digest)?, None, Some(secret), None, None)
                .map_err(cmd("sealing the record key"))?;
            Ok((r.out_public, r.out_private))
        })?;
        let policy = policy_session(&mut self.ctx, SessionType::Policy)?;
        self.ctx
            .execute_without_session(|ctx| ctx.policy_pcr(policy, Digest::default(), pcrs))
            .map_err(cmd("PolicyPCR"))?;
        let result = self.ctx.execute_with_session(Some(AuthSession::from(policy)), |ctx| {
            ctx.unseal(ObjectHandle::from(sealed))
        });
        let _ = self.ctx.flush_context(ObjectHandle::from(sealed));
        let _ = self.ctx.flush_context(ObjectHandle::from(SessionHandle::from(policy)));
        let data = result.map_err(|source| TpmError::PolicyMismatch {
            pcrs: self.config.pcrs.clone(),
            source,
        })?;
        let bytes: [u8; 32] =
            data.value().try_into().map_err(|_| TpmError::Unexpected("Unseal"))?;
        Ok(Zeroizing::new(bytes))
    }

    /// `N` bytes from the TPM's random number generator (salts, nonces).
    pub fn random<const N: usize>(&mut self) -> Result<[u8; N], TpmError> {
        let bytes = self.ctx.get_random(N).map_err(cmd("GetRandom"))?;
        bytes.value().try_into().map_err(|_| TpmError::Unexpected("GetRandom"))
    }

    /// The NV counter's current value.
    pub fn counter(&mut self) -> Result<u64, TpmError> {
        let nv = self.nv;
        let data = self
            .ctx
            .nv_read(NvAuth::Owner, nv, 8, 0)
            .map_err(cmd("reading the checkpoint counter"))?;
        let bytes: [u8; 8] =
            data.value().try_into().map_err(|_| TpmError::Unexpected("NV_Read"))?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// Increments the NV counter and returns its new value.
    pub fn increment(&mut self) -> Result<u64, TpmError> {
        let nv = self.nv;
        self.ctx.nv_increment(NvAuth::Owner, nv).map_err(cmd("incrementing the counter"))?;
        self.counter()
    }

    /// A quote carrying `qualifying` as extra data and the TPM's clock, signed by the
    /// checkpoint key: `(marshalled TPMS_ATTEST, DER signature)`.
    pub fn quote(&mut self, qualifying: &Hash) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let data = Data::try_from(qualifying.to_vec()).map_err(|_| TpmError::Unexpected("Data"))?;
        let pcrs = pcr_selection(&self.config.pcrs)?;
        let signer = self.signer;
        let (attest, signature) = self
            .ctx
            .quote(signer, data, SignatureScheme::Null, pcrs)
            .map_err(cmd("quoting a checkpoint"))?;
        let attest = attest.marshall().map_err(cmd("marshalling the attestation"))?;
        Ok((attest, der(&signature)?))
    }

    /// ECDSA P-256 over SHA-256(`message`), DER: what `openssl dgst -sha256 -verify` checks.
    pub fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, TpmError> {
        use sha2::Digest as _;
        let digest = Digest::try_from(sha2::Sha256::digest(message).to_vec())
            .map_err(|_| TpmError::Unexpected("Digest"))?;
        // A null ticket: the key is unrestricted, so the TPM signs digests it did not hash.
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: tss_esapi::constants::tss::TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(cmd("building a hash ticket"))?;
        let signer = self.signer;
        let signature =
            self.ctx.sign(signer, digest, SignatureScheme::Null, ticket).map_err(cmd("signing"))?;
        der(&signature)
    }
}

fn hmac_session(ctx: &mut Context) -> Result<AuthSession, TpmError> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Hmac,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(cmd("starting a session"))?
        .ok_or(TpmError::Unexpected("StartAuthSession"))?;
    let (attrs, mask) =
        SessionAttributesBuilder::new().with_decrypt(true).with_encrypt(true).build();
    ctx.tr_sess_set_attributes(session, attrs, mask).map_err(cmd("configuring a session"))?;
    Ok(session)
}

fn policy_session(ctx: &mut Context, kind: SessionType) -> Result<PolicySession, TpmError> {
    let session = ctx
        .execute_without_session(|ctx| {
            ctx.start_auth_session(
                None,
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
        })
        .map_err(cmd("starting a policy session"))?
        .ok_or(TpmError::Unexpected("StartAuthSession"))?;
    PolicySession::try_from(session).map_err(|_| TpmError::Unexpected("StartAuthSession"))
}

/// The policy digest of "these PCRs hold their current values".
fn trial_policy(ctx: &mut Context, pcrs: PcrSelectionList) -> Result<Digest, TpmError> {
    let trial = policy_session(ctx, SessionType::Trial)?;
    let digest = ctx.execute_without_session(|ctx| {
        ctx.policy_pcr(trial, Digest::default(), pcrs)?;
        ctx.policy_get_digest(trial)
    });
    let _ = ctx.flush_context(ObjectHandle::from(SessionHandle::from(trial)));
    digest.map_err(cmd("computing the PCR policy"))
}

fn pcr_selection(pcrs: &[u8]) -> Result<PcrSelectionList, TpmError> {
    let slots = pcrs
        .iter()
        .map(|&p| {
            1u32.checked_shl(u32::from(p))
                .and_then(|bit| PcrSlot::try_from(bit).ok())
                .ok_or(TpmError::BadPcr(p))
        })
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(cmd("selecting PCRs"))
}

/// Loads a wrapped object from `dir/name.{pub,priv}`, creating and saving it first if absent.
fn load_or_create(
    ctx: &mut Context,
    parent: KeyHandle,
    dir: &Path,
    name: &str,
    create: impl FnOnce(&mut Context) -> Result<(Public, Private), TpmError>,
) -> Result<KeyHandle, TpmError> {
    let pub_path = dir.join(format!("{name}.pub"));
    let priv_path = dir.join(format!("{name}.priv"));
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TpmError::KeyFile { path, source }
    };
    let (public, private) = if pub_path.exists() && priv_path.exists() {
        let public = std::fs::read(&pub_path).map_err(file_err(&pub_path))?;
        let private = std::fs::read(&priv_path).map_err(file_err(&priv_path))?;
        (
            Public::unmarshall(&public).map_err(cmd("reading a wrapped key"))?,
            Private::try_from(private).map_err(cmd("reading a wrapped key"))?,
        )
    } else {
        let (public, private) = create(ctx)?;
        let bytes = public.marshall().map_err(cmd("marshalling a key"))?;
        write_durably(&pub_path, &bytes).map_err(file_err(&pub_path))?;
        write_durably(&priv_path, private.value()).map_err(file_err(&priv_path))?;
        (public, private)
    };
    ctx.load(parent, private, public).map_err(cmd("loading a wrapped key"))
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Flushes the transient objects and the sessions a previous run left in the TPM: (objects,
/// sessions). Through the kernel's resource manager (`/dev/tpmrm0`) there are none: it flushes
/// a connection's objects and sessions when it closes. Straight to a TPM (swtpm in tests, the
/// QEMU boot test) a process killed with SIGKILL leaves its keys loaded and its HMAC session
/// open: after a few such deaths the TPM has no room to load our keys
/// (`TPM_RC_OBJECT_MEMORY`) or to start our session (`TPM_RC_SESSION_MEMORY`: a TPM holds as
/// few as three). Only the record store uses this TPM, so every one is stale.
fn flush_stale(ctx: &mut Context) -> Result<(usize, usize), TpmError> {
    /// The first handle of each kind, as `GetCapability(TPM_CAP_HANDLES)` takes them.
    const TRANSIENT: u32 = 0x8000_0000;
    /// Loaded sessions, HMAC and policy alike.
    const LOADED_SESSION: u32 = 0x0200_0000;
    /// Sessions whose context was saved: they still hold a slot until flushed.
    const SAVED_SESSION: u32 = 0x0300_0000;
    let objects = flush_listed(ctx, TRANSIENT)?;
    let sessions = flush_listed(ctx, LOADED_SESSION)? + flush_listed(ctx, SAVED_SESSION)?;
    Ok((objects, sessions))
}

/// Flushes every handle the TPM lists from `first` within its kind (the top byte).
fn flush_listed(ctx: &mut Context, first: u32) -> Result<usize, TpmError> {
    let mut flushed = 0;
    // A TPM lists at most as many as fit in one response: ask again until none are left, but
    // not forever if one will not go.
    for _ in 0..16 {
        let (listed, _) = ctx
            .execute_without_session(|ctx| {
                ctx.get_capability(tss_esapi::constants::CapabilityType::Handles, first, 64)
            })
            .map_err(cmd("listing what a previous run left loaded"))?;
        let tss_esapi::structures::CapabilityData::Handles(list) = listed else {
            return Ok(flushed);
        };
        let stale: Vec<_> =
            list.iter().copied().filter(|h| u32::from(*h) >> 24 == first >> 24).collect();
        if stale.is_empty() {
            return Ok(flushed);
        }
        for handle in stale {
            let object = ctx
                .execute_without_session(|ctx| ctx.tr_from_tpm_public(handle))
                .map_err(cmd("opening what a previous run left loaded"))?;
            ctx.execute_without_session(|ctx| ctx.flush_context(object))
                .map_err(cmd("flushing what a previous run left loaded"))?;
            flushed += 1;
        }
    }
    Ok(flushed)
}

/// The NV counter at `index`, defined on first use.
fn counter_handle(ctx: &mut Context, index: u32) -> Result<NvIndexHandle, TpmError> {
    let tpm_handle = NvIndexTpmHandle::new(index).map_err(cmd("choosing the NV index"))?;
    // Ask which indices exist first: probing a missing one makes tpm2-tss log an error.
    // GetCapability has no parameters to encrypt, so it may not carry our HMAC session.
    let (listed, _) = ctx
        .execute_without_session(|ctx| {
            ctx.get_capability(tss_esapi::constants::CapabilityType::Handles, index, 1)
        })
        .map_err(cmd("listing NV indices"))?;
    let exists = matches!(&listed, tss_esapi::structures::CapabilityData::Handles(list)
        if list.iter().any(|h| u32::from(*h) == index));
    if exists {
        let handle = ctx
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(tpm_handle.into()))
            .map_err(cmd("opening the NV counter"))?;
        return Ok(NvIndexHandle::from(handle));
    }
    let attributes = NvIndexAttributesBuilder::new()
        .with_owner_write(true)
        .with_owner_read(true)
        .with_nv_index_type(tss_esapi::constants::NvIndexType::Counter)
        .build()
        .map_err(cmd("describing the NV counter"))?;
    let public = NvPublicBuilder::new()
        .with_nv_index(tpm_handle)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attributes)
        .with_data_area_size(8)
        .build()
        .map_err(cmd("describing the NV counter"))?;
    let handle = ctx
        .nv_define_space(Provision::Owner, None, public)
        .map_err(cmd("defining the NV counter"))?;
    // A counter cannot be read until it has been incremented once.
    ctx.nv_increment(NvAuth::Owner, handle).map_err(cmd("initialising the NV counter"))?;
    Ok(handle)
}

fn srk_template() -> Result<Public, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(cmd("describing the storage root key"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(cmd("describing the storage root key"))?,
        )
        .with_ecc_unique_identifier(Default::default())
        .build()
        .map_err(cmd("describing the storage root key"))
}

fn signer_template() -> Result<Public, TpmError> {
    tss_esapi::utils::create_unrestricted_signing_ecc_public(
        EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
        EccCurve::NistP256,
    )
    .map_err(cmd("describing the checkpoint key"))
}

fn sealed_template(policy: Digest) -> Result<Public, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_admin_with_policy(true)
        .with_user_with_auth(false)
        .build()
        .map_err(cmd("describing the sealed key"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Default::default())
        .build()
        .map_err(cmd("describing the sealed key"))
}

fn verifying_key(public: &Public) -> Result<VerifyingKey, TpmError> {
    let Public::Ecc { unique, .. } = public else {
        return Err(TpmError::Unexpected("ReadPublic"));
    };
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&pad32(unique.x().value())?);
    sec1.extend_from_slice(&pad32(unique.y().value())?);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| TpmError::Unexpected("ReadPublic"))
}

/// TPM integers drop leading zeros; P-256 field elements are 32 bytes.
fn pad32(v: &[u8]) -> Result<[u8; 32], TpmError> {
    let mut out = [0u8; 32];
    let start = 32usize.checked_sub(v.len()).ok_or(TpmError::Unexpected("ECC parameter"))?;
    out[start..].copy_from_slice(v);
    Ok(out)
}

fn der(signature: &Signature) -> Result<Vec<u8>, TpmError> {
    let Signature::EcDsa(sig) = signature else {
        return Err(TpmError::Unexpected("Sign"));
    };
    let r = pad32(sig.signature_r().value())?;
    let s = pad32(sig.signature_s().value())?;
    let sig =
        p256::ecdsa::Signature::from_scalars(r, s).map_err(|_| TpmError::Unexpected("Sign"))?;
    Ok(sig.to_der().as_bytes().to_vec())
}
