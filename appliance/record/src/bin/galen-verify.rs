//! `galen-verify`: checks a Galen export bundle off the device, with no TPM, D-Bus or GUI.
//!
//! Exit status: 0 verified, 1 the bundle does not verify (the reason names the first bad file
//! or entry), 2 the bundle could not be read at all.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use galen_record::bundle;

/// Verify a Galen batch-record export: the signed manifest, every file's digest, the TPM
/// checkpoint, the whole hash chain, every exported entry and every e-signature.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The export folder (the one holding VERIFY.txt and MANIFEST.sha256).
    bundle: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let files = match bundle::read_dir(&cli.bundle) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("galen-verify: cannot read {}: {e}", cli.bundle.display());
            return ExitCode::from(2);
        }
    };
    match bundle::verify(&files) {
        Ok(report) if cli.json => {
            println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!("VERIFIED: {}", cli.bundle.display());
            println!("  appliance          {}", r.device_id);
            println!("  scope              {}", r.scope);
            println!("  entries exported   {}", r.exported_entries);
            println!("  chain sealed up to entry {} ({})", r.chain_entries, r.checkpoint_reason);
            println!("  checkpoint time    {} (appliance clock)", r.checkpoint_utc);
            // Reset and restart counts are obfuscated by the TPM for owner-hierarchy keys.
            println!(
                "  TPM clock          {} ms powered, attested by the TPM ({})",
                r.tpm_clock.clock_ms,
                if r.tpm_clock.safe { "safe" } else { "NOT safe: it may have gone back" }
            );
            println!("  key fingerprint    {}", r.public_key_fingerprint);
            println!("    compare it with the appliance's commissioning record");
            for s in &r.signatures {
                println!("  signature          {s}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if cli.json {
                println!("{}", serde_json::json!({ "verified": false, "reason": e.to_string() }));
            }
            eprintln!("NOT VERIFIED: {e}");
            ExitCode::FAILURE
        }
    }
}
