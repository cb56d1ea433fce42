//! People: roles and what each may do, PIN hashing, lockout and sessions (21 CFR 11.10(d),
//! 11.10(g), 11.200, 11.300).
//!
//! The rules here are pure and take time as an argument; the record store applies them and
//! records every outcome. The role × action matrix is one exhaustive `match`, so adding a role
//! or an action does not compile until someone decides what it may do.

use std::sync::{Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use galen_record::UtcMillis;
use galen_record::signature::Meaning;
use serde::{Deserialize, Serialize};

/// What a person is at this appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs batches at the touchscreen.
    Pharmacist,
    /// The second person who checks critical entries.
    Verifier,
    /// Activates recipes, reviews and releases batches.
    Qa,
    /// Reads and exports records, nothing else.
    Inspector,
    /// Manages users; may not sign batch records.
    Admin,
    /// Service engineer: devices and diagnostics, no batch records.
    Service,
}

impl Role {
    pub const ALL: [Self; 6] =
        [Self::Pharmacist, Self::Verifier, Self::Qa, Self::Inspector, Self::Admin, Self::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pharmacist => "pharmacist",
            Self::Verifier => "verifier",
            Self::Qa => "qa",
            Self::Inspector => "inspector",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Everything a person can ask the appliance to do that needs authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    RunBatch,
    Sign(Meaning),
    ViewRecords,
    ExportRecords,
    ImportRecipes,
    ManageUsers,
    ServiceDevices,
}

/// The role × action matrix.
pub fn permits(role: Role, action: Action) -> bool {
    use Action::*;
    use Meaning::*;
    match role {
        Role::Pharmacist => matches!(action, RunBatch | Sign(Authored) | ViewRecords),
        Role::Verifier => matches!(action, Sign(Verified) | ViewRecords),
        Role::Qa => matches!(
            action,
            Sign(Reviewed | Released | Activated) | ViewRecords | ExportRecords | ImportRecipes
        ),
        Role::Inspector => matches!(action, ViewRecords | ExportRecords),
        Role::Admin => matches!(action, ManageUsers | ViewRecords),
        Role::Service => matches!(action, ServiceDevices),
    }
}

/// How strict authentication is. The defaults follow common GMP practice; a site may tighten
/// them in the unit configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that lock an account.
    pub max_failures: u32,
    /// How long a lockout lasts.
    pub lockout_ms: i64,
    /// Inactivity after which a session ends.
    pub session_timeout_ms: i64,
    /// Shortest PIN accepted when one is set.
    pub min_pin_len: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lockout_ms: 15 * 60 * 1000,
            session_timeout_ms: 10 * 60 * 1000,
            min_pin_len: 6,
        }
    }
}

/// A user row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub full_name: String,
    pub role: Role,
    pub active: bool,
    pub failed_attempts: u32,
    pub locked_until: Option<UtcMillis>,
}

/// Why someone could not authenticate. The messages are what the touchscreen shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Deliberately the same for an unknown user and a wrong PIN, so names cannot be probed.
    #[error("user name or PIN is wrong")]
    WrongCredentials,
    #[error("this account is locked until {until} after repeated wrong PINs; ask an administrator")]
    LockedOut { until: UtcMillis },
    #[error("this account has been deactivated")]
    Deactivated,
    #[error("the session ended after inactivity; log in again")]
    SessionExpired,
    #[error("the {role} role may not {action}")]
    NotPermitted { role: &'static str, action: String },
    #[error("a PIN needs at least {0} digits")]
    PinTooShort(usize),
}

/// The longest PIN the touchscreen's keypad takes.
pub const MAX_PIN_LEN: usize = 12;
/// The longest user name: a badge or a short login, not a sentence.
pub const MAX_USERNAME_LEN: usize = 32;
/// The longest printed name, as it fits a signature line of the record and the label.
pub const MAX_FULL_NAME_LEN: usize = 80;

/// Why a new account cannot be created as given. Checked before anything is stored, so that
/// every account can be logged in to at the touchscreen, whose login keyboard has the letters
/// a–z and the digits, and whose PIN keypad has digits only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewUserError {
    #[error(
        "user name {0:?}: use 2 to {MAX_USERNAME_LEN} lower-case letters a-z and digits, \
         starting with a letter (what the touchscreen's keyboard can type)"
    )]
    UserName(String),
    #[error(
        "printed name: 1 to {MAX_FULL_NAME_LEN} characters, no line breaks or control \
         characters, not only spaces"
    )]
    FullName,
    #[error("a PIN is digits only, at most {MAX_PIN_LEN} (what the touchscreen's keypad types)")]
    Pin,
}

/// Checks a new account's name, printed name and PIN characters (the PIN's length against the
/// policy is [`AuthError::PinTooShort`], checked by the store, for the API's named error).
pub fn check_new_user(username: &str, full_name: &str, pin: &str) -> Result<(), NewUserError> {
    let name_ok = (2..=MAX_USERNAME_LEN).contains(&username.len())
        && username.starts_with(|c: char| c.is_ascii_lowercase())
        && username.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name_ok {
        return Err(NewUserError::UserName(username.to_owned()));
    }
    let printed = full_name.chars().count();
    if printed == 0
        || printed > MAX_FULL_NAME_LEN
        || full_name.trim().is_empty()
        || full_name.chars().any(char::is_control)
    {
        return Err(NewUserError::FullName);
    }
    if pin.len() > MAX_PIN_LEN || !pin.chars().all(|c| c.is_ascii_digit()) {
        return Err(NewUserError::Pin);
    }
    Ok(())
}

/// The working memory of every PIN hash in this process (19 MiB at the default cost),
/// allocated once and reused. Allocated per hash, as the argon2 crate does by default, glibc
/// kept the freed blocks in whichever arena the calling thread used: `applianced` grew by
/// 19 MiB with each login, to 187 MiB after nine in a row and past 500 MiB with a few at once
/// (`benches/applianced.rs`). Hashes are serialized by the record store's lock anyway, so one
/// memory costs no waiting; it is wiped after each use, as it holds values derived from a PIN.
static WORKSPACE: Mutex<Vec<Block>> = Mutex::new(Vec::new());

fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    pin: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let mut memory = WORKSPACE.lock().unwrap_or_else(PoisonError::into_inner);
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let result = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        pin,
        salt,
        out,
        &mut memory[..blocks],
    );
    memory[..blocks].fill(Block::new());
    result
}

/// Hashes a PIN with Argon2id (default parameters) and the given random salt, in PHC form.
pub fn hash_pin(pin: &str, salt: &[u8; 16]) -> String {
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let fixed = "Argon2 with default parameters accepts any PIN and a 16-byte salt";
    argon2_into(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        pin.as_bytes(),
        salt,
        &mut out,
    )
    .expect(fixed);
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect(fixed),
        salt: Some(Salt::new(salt).expect(fixed)),
        hash: Some(Output::new(&out).expect(fixed)),
    }
    .to_string()
}

/// True if `pin` matches the stored hash (Argon2 in PHC form, as [`hash_pin`] writes it).
pub fn pin_matches(pin: &str, stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else { return false };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let algorithm = Algorithm::try_from(hash.algorithm.as_str());
    let version = hash.version.map(Version::try_from).transpose();
    let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, Params::try_from(&hash))
    else {
        return false;
    };
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else { return false };
    let computed = argon2_into(
        algorithm,
        version.unwrap_or_default(),
        params,
        pin.as_bytes(),
        salt.as_ref(),
        out,
    );
    // `Output` compares in constant time.
    computed.is_ok() && Output::new(out).is_ok_and(|o| o == *expected)
}

/// Whether `user` may try a PIN now; wrong-PIN accounting is the caller's.
pub fn may_attempt(user: &User, now: UtcMillis) -> Result<(), AuthError> {
    if !user.active {
        return Err(AuthError::Deactivated);
    }
    match user.locked_until {
        Some(until) if now < until => Err(AuthError::LockedOut { until }),
        _ => Ok(()),
    }
}

/// After a wrong PIN: the new failure count, and the lockout end if this failure locks.
pub fn after_failure(user: &User, now: UtcMillis, policy: &Policy) -> (u32, Option<UtcMillis>) {
    // A lockout that has expired starts a fresh count.
    let previous =
        if user.locked_until.is_some_and(|u| now >= u) { 0 } else { user.failed_attempts };
    let failures = previous + 1;
    let lock = (failures >= policy.max_failures).then(|| UtcMillis(now.0 + policy.lockout_ms));
    (failures, lock)
}

/// A logged-in person. Bound by the caller to one connection (the D-Bus peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: u64,
    pub username: String,
    pub full_name: String,
    pub role: Role,
    last_activity: UtcMillis,
}

impl Session {
    pub fn new(user: &User, now: UtcMillis) -> Self {
        Self {
            user_id: user.id,
            username: user.username.clone(),
            full_name: user.full_name.clone(),
            role: user.role,
            last_activity: now,
        }
    }

    /// Records activity, or ends the session if it was idle too long.
    pub fn touch(&mut self, now: UtcMillis, policy: &Policy) -> Result<(), AuthError> {
        if now.0 - self.last_activity.0 > policy.session_timeout_ms {
            return Err(AuthError::SessionExpired);
        }
        self.last_activity = now;
        Ok(())
    }

    /// Fails unless this session's role may do `action`.
    pub fn require(&self, action: Action) -> Result<(), AuthError> {
        if permits(self.role, action) {
            Ok(())
        } else {
            Err(AuthError::NotPermitted { role: self.role.as_str(), action: describe(action) })
        }
    }
}

fn describe(action: Action) -> String {
    match action {
        Action::RunBatch => "run batches".into(),
        Action::Sign(m) => format!("sign as \"{}\"", m.as_words()),
        Action::ViewRecords => "view records".into(),
        Action::ExportRecords => "export records".into(),
        Action::ImportRecipes => "import recipes".into(),
        Action::ManageUsers => "manage users".into(),
        Action::ServiceDevices => "service devices".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 1,
            username: "ada".into(),
            full_name: "Ada Pharmacist".into(),
            role: Role::Pharmacist,
            active: true,
            failed_attempts: 0,
            locked_until: None,
        }
    }

    #[test]
    fn role_action_matrix() {
        let actions = [
            Action::RunBatch,
            Action::Sign(Meaning::Authored),
            Action::Sign(Meaning::Verified),
            Action::Sign(Meaning::Reviewed),
            Action::Sign(Meaning::Released),
            Action::Sign(Meaning::Activated),
            Action::ViewRecords,
            Action::ExportRecords,
            Action::ImportRecipes,
            Action::ManageUsers,
            Action::ServiceDevices,
        ];
        let mut table = String::new();
        for role in Role::ALL {
            let allowed: Vec<String> =
                actions.iter().filter(|a| permits(role, **a)).map(|a| describe(*a)).collect();
            table.push_str(&format!("{:<10} {}\n", role.as_str(), allowed.join("; ")));
        }
        insta::assert_snapshot!(table);
    }

    #[test]
    fn admins_cannot_sign_batch_records() {
        for meaning in [Meaning::Authored, Meaning::Verified, Meaning::Reviewed, Meaning::Released]
        {
            assert!(!permits(Role::Admin, Action::Sign(meaning)));
        }
    }

    #[test]
    fn a_new_account_is_what_the_touchscreen_can_type() {
        for ok in ["ada", "qa2", "jsmith", "a1234567890123456789012345678901"] {
            assert_eq!(check_new_user(ok, "Ada Lovelace", "123456"), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Ada",
            "2ada",
            "j.smith",
            "jo smith",
            "zoë",
            "a12345678901234567890123456789012",
        ] {
            assert_eq!(
                check_new_user(bad, "A Name", "123456"),
                Err(NewUserError::UserName(bad.to_owned())),
                "{bad:?}"
            );
        }
        for bad in ["", "   ", "Ada\nLovelace", &"x".repeat(MAX_FULL_NAME_LEN + 1)] {
            assert_eq!(
                check_new_user("ada", bad, "123456"),
                Err(NewUserError::FullName),
                "{bad:?}"
            );
        }
        assert_eq!(check_new_user("ada", "Zoë Ünal-Øster", "123456"), Ok(()), "any script");
        for bad in ["12345a", "123 456", "１２３４５６", "1234567890123"] {
            assert_eq!(check_new_user("ada", "Ada", bad), Err(NewUserError::Pin), "{bad:?}");
        }
    }

    #[test]
    fn pins_hash_and_verify() {
        let hash = hash_pin("482913", &[7; 16]);
        assert!(hash.starts_with("$argon2id$"));
        assert!(pin_matches("482913", &hash));
        assert!(!pin_matches("482914", &hash));
        assert!(!pin_matches("482913", "not a hash"));
    }

    #[test]
    fn pins_hash_exactly_as_the_argon2_crate_does_so_stored_hashes_still_verify() {
        use argon2::PasswordHasher as _;
        let salt = [9; 16];
        let theirs = Argon2::default().hash_password_with_salt(b"271828", &salt).unwrap();
        assert_eq!(hash_pin("271828", &salt), theirs.to_string());
        // Other parameters, as an older build or a site policy may have stored them.
        let params = Params::new(8 * 1024, 3, 1, Some(24)).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"271828", &salt)
            .unwrap()
            .to_string();
        assert!(pin_matches("271828", &other));
        assert!(!pin_matches("271829", &other));
    }

    #[test]
    fn lockout_after_repeated_failures_then_expiry() {
        let policy = Policy::default();
        let mut u = user();
        let now = UtcMillis(1_000_000);
        for n in 1..policy.max_failures {
            let (failures, lock) = after_failure(&u, now, &policy);
            assert_eq!((failures, lock), (n, None));
            u.failed_attempts = failures;
        }
        let (failures, lock) = after_failure(&u, now, &policy);
        assert_eq!(failures, policy.max_failures);
        let until = lock.expect("the fifth failure locks");
        u.locked_until = Some(until);
        assert_eq!(may_attempt(&u, UtcMillis(until.0 - 1)), Err(AuthError::LockedOut { until }));
        assert_eq!(may_attempt(&u, until), Ok(()));
        assert_eq!(after_failure(&u, until, &policy), (1, None));
    }

    #[test]
    fn sessions_expire_after_inactivity() {
        let policy = Policy::default();
        let mut s = Session::new(&user(), UtcMillis(0));
        assert_eq!(s.touch(UtcMillis(policy.session_timeout_ms), &policy), Ok(()));
        let late = UtcMillis(2 * policy.session_timeout_ms + 1);
        assert_eq!(s.touch(late, &policy), Err(AuthError::SessionExpired));
    }

    #[test]
    fn deactivated_users_cannot_log_in() {
        let mut u = user();
        u.active = false;
        assert_eq!(may_attempt(&u, UtcMillis(0)), Err(AuthError::Deactivated));
    }
}
