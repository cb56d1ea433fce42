//! `recipe`: the manufacturer's tool to author, lint, sign and publish compounding recipes.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use galen_recipes::authoring;
use galen_recipes::model::{Ident, Version};
use galen_recipes::tuf::intake::Intake;
use galen_recipes::tuf::publish::{self, Expiries, Progress, RoleSpec};
use galen_recipes::tuf::{ROLES, key_file};
use jiff::{SignedDuration, Timestamp};
use tough::schema::RoleType;

/// Author, lint, sign and publish Galen compounding recipes.
///
/// A typical first release:
///   recipe new my-product > my-product.toml
///   recipe lint my-product.toml
///   recipe keys --out keys            (keep keys/root.pk8 offline)
///   recipe publish --repo repo --keys keys my-product.toml
///   recipe verify --repo repo --root keys/root.json
/// Copy `repo/` to a USB stick or any static HTTPS host.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new recipe skeleton that lints clean, to edit from.
    New {
        /// Recipe id: lowercase letters, digits and `-`.
        id: String,
        /// Write here instead of standard output (never overwrites).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check recipe files; errors are printed as file:line:column: error[rule]: message, and
    /// warnings (which do not fail the check) as file:line:column: warning[rule]: message.
    Lint {
        /// Recipe files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Generate Ed25519 keys (PKCS#8 DER) for root, targets, snapshot and timestamp, and a
    /// signed root.json (version 1) that lists them.
    Keys {
        /// Directory to create; it must not hold keys already.
        #[arg(long)]
        out: PathBuf,
        /// Days until root.json expires.
        #[arg(long, default_value_t = 365)]
        root_days: i64,
    },
    /// Create or update a TUF repository with these recipes. Each recipe is linted first; a
    /// published id only takes a higher revision.
    Publish {
        /// Repository directory (`metadata/` and `targets/` inside).
        #[arg(long)]
        repo: PathBuf,
        /// Directory with targets.pk8, snapshot.pk8 and timestamp.pk8.
        #[arg(long)]
        keys: PathBuf,
        /// root.json for a new repository (default: <keys>/root.json).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Days until targets.json expires.
        #[arg(long, default_value_t = 180)]
        targets_days: i64,
        /// Days until snapshot.json expires.
        #[arg(long, default_value_t = 30)]
        snapshot_days: i64,
        /// Days until timestamp.json expires; it bounds how long a USB stick stays usable.
        #[arg(long, default_value_t = 30)]
        timestamp_days: i64,
        /// Recipe files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Load a repository exactly as a unit would (fresh state) and list its recipes.
    Verify {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// The root.json the unit ships with.
        #[arg(long)]
        root: PathBuf,
        /// Unit model to check compatibility for.
        #[arg(long, default_value = "galen-cu1")]
        unit_model: String,
        /// Appliance version to check compatibility for.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        appliance_version: String,
    },
    /// Write root version N+1 with a new key for a role, signed by the old and new root keys.
    RotateRoot {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Directory with the current keys (root.pk8 signs as the old root).
        #[arg(long)]
        keys: PathBuf,
        /// Role whose key is replaced.
        #[arg(long, default_value = "root")]
        role: String,
        /// The new private key file (create one with `recipe keys` in another directory).
        #[arg(long)]
        new_key: PathBuf,
        /// Days until the new root expires.
        #[arg(long, default_value_t = 365)]
        root_days: i64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Command::New { id, out } => new(&id, out.as_deref()),
        Command::Lint { files } => lint(&files),
        Command::Keys { out, root_days } => runtime.block_on(keys(&out, root_days)),
        Command::Publish {
            repo,
            keys,
            root,
            targets_days,
            snapshot_days,
            timestamp_days,
            files,
        } => {
            let now = Timestamp::now();
            let expiries = Expiries {
                targets: days_from(now, targets_days)?,
                snapshot: days_from(now, snapshot_days)?,
                timestamp: days_from(now, timestamp_days)?,
            };
            let root = root.unwrap_or_else(|| keys.join("root.json"));
            runtime.block_on(publish_cmd(&repo, &keys, &root, expiries, &files))
        }
        Command::Verify { repo, root, unit_model, appliance_version } => {
            runtime.block_on(verify(&repo, &root, &unit_model, &appliance_version))
        }
        Command::RotateRoot { repo, keys, role, new_key, root_days } => {
            runtime.block_on(rotate(&repo, &keys, &role, &new_key, root_days))
        }
    }
}

fn days_from(now: Timestamp, days: i64) -> Result<Timestamp> {
    if !(1..=3650).contains(&days) {
        bail!("expiry must be 1–3650 days, not {days}");
    }
    Ok(now.checked_add(SignedDuration::from_hours(days * 24))?)
}

fn new(id: &str, out: Option<&Path>) -> Result<()> {
    if Ident::new(id).is_none() {
        bail!(
            "`{id}` is not a recipe id: lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let text = SKELETON.replace("@ID@", id);
    authoring::parse("skeleton", &text)
        .map_err(|e| anyhow::anyhow!("the skeleton does not lint:\n{e}"))?;
    match out {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            eprintln!("wrote {}; edit it, then `recipe lint {}`", path.display(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn lint(files: &[PathBuf]) -> Result<()> {
    let mut failed = 0;
    for path in files {
        let text = read_bounded(path)?;
        let name = path.display().to_string();
        match authoring::parse(&name, &text) {
            Ok(r) => {
                println!(
                    "{name}: ok — {} revision {}, {} phases{}",
                    r.id,
                    r.revision,
                    r.phases().count(),
                    if r.personalisation.is_some() { ", personalised" } else { "" }
                );
                for w in authoring::warnings(&name, &r) {
                    println!("{w}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("{e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} file(s) have errors", files.len());
    }
    Ok(())
}

fn read_bounded(path: &Path) -> Result<String> {
    let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if len > authoring::MAX_RECIPE_BYTES as u64 {
        bail!(
            "{}: {len} bytes; recipes are at most {}",
            path.display(),
            authoring::MAX_RECIPE_BYTES
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

async fn keys(out: &Path, root_days: i64) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut specs = Vec::new();
    for role in ROLES {
        let path = out.join(key_file(role));
        publish::generate_key(&path)?;
        println!("key   {}", path.display());
        specs.push(RoleSpec { role, keys: vec![path], threshold: 1 });
    }
    let root = publish::create_root(
        &specs,
        days_from(Timestamp::now(), root_days)?,
        &[out.join(key_file(RoleType::Root))],
    )
    .await?;
    let path = out.join("root.json");
    std::fs::write(&path, root).with_context(|| format!("writing {}", path.display()))?;
    println!("root  {} (version 1, ship it in the appliance image)", path.display());
    Ok(())
}

async fn publish_cmd(
    repo: &Path,
    keys: &Path,
    root: &Path,
    expiries: Expiries,
    files: &[PathBuf],
) -> Result<()> {
    let mut recipes = Vec::with_capacity(files.len());
    for path in files {
        let name = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        recipes.push((name, read_bounded(path)?.into_bytes()));
    }
    let key_paths: Vec<PathBuf> =
        ROLES.iter().map(|r| keys.join(key_file(*r))).filter(|p| p.exists()).collect();
    let tty = std::io::stderr().is_terminal();
    let mut progress = |p: Progress| match p {
        Progress::Recipe { done, total, id } => {
            if tty {
                eprint!("\r\x1b[2Kchecked {done}/{total} {id}");
                if done == total {
                    eprintln!();
                }
            } else if total <= 20 || done % (total / 10).max(1) == 0 || done == total {
                eprintln!("checked {done}/{total} {id}");
            }
        }
        Progress::Signing => eprintln!("signing metadata…"),
        Progress::Writing => eprintln!("writing metadata…"),
    };
    let initial = root.exists().then_some(root);
    let report =
        publish::publish(repo, initial, &key_paths, &recipes, expiries, &mut progress).await?;
    for (id, rev) in &report.published {
        println!("published {id} revision {rev}");
    }
    for id in &report.unchanged {
        println!("unchanged {id}");
    }
    let (t, s, ts) = report.versions;
    println!(
        "repository {}: root v{}, targets v{t}, snapshot v{s}, timestamp v{ts}; {} recipe(s); timestamp expires {}",
        repo.display(),
        report.root_version,
        report.targets,
        expiries.timestamp
    );
    Ok(())
}

async fn verify(repo: &Path, root: &Path, unit_model: &str, appliance_version: &str) -> Result<()> {
    let version = Version::parse(appliance_version)
        .with_context(|| format!("`{appliance_version}` is not a version like 1.2.3"))?;
    let trusted = std::fs::read(root).with_context(|| format!("reading {}", root.display()))?;
    let state = tempfile::tempdir()?;
    let intake = Intake::new(trusted, state.path().to_owned(), unit_model, version)?;
    let report = intake.from_directory(repo, Timestamp::now()).await?;
    let v = report.versions;
    println!(
        "verified {}: root v{}, targets v{}, snapshot v{}, timestamp v{}",
        repo.display(),
        v.root,
        v.targets,
        v.snapshot,
        v.timestamp
    );
    for i in &report.installed {
        println!(
            "  ok       {:<36} rev {:<4} min appliance {:<8} models {:<16} sha256 {}…",
            i.recipe.id.as_str(),
            i.recipe.revision,
            i.recipe.min_appliance_version.to_string(),
            i.recipe.unit_models.join(","),
            i.sha256.get(..16).unwrap_or(&i.sha256)
        );
    }
    for r in &report.refused {
        println!("  REFUSED  {:<36} {}", r.target, r.reason);
    }
    if !report.refused.is_empty() {
        bail!(
            "{} recipe(s) would be refused by a {unit_model} unit running {version}",
            report.refused.len()
        );
    }
    Ok(())
}

async fn rotate(
    repo: &Path,
    keys: &Path,
    role: &str,
    new_key: &Path,
    root_days: i64,
) -> Result<()> {
    let role = match role {
        "root" => RoleType::Root,
        "targets" => RoleType::Targets,
        "snapshot" => RoleType::Snapshot,
        "timestamp" => RoleType::Timestamp,
        other => bail!("`{other}` is not one of root, targets, snapshot, timestamp"),
    };
    let old_root = keys.join(key_file(RoleType::Root));
    let new_root_keys =
        if role == RoleType::Root { vec![new_key.to_owned()] } else { vec![old_root.clone()] };
    let version = publish::rotate_root(
        repo,
        &[RoleSpec { role, keys: vec![new_key.to_owned()], threshold: 1 }],
        days_from(Timestamp::now(), root_days)?,
        &[old_root],
        &new_root_keys,
    )
    .await?;
    println!(
        "wrote {}/metadata/{version}.root.json: {role} key replaced, signed by the old and the new root keys",
        repo.display()
    );
    Ok(())
}

/// A small recipe that lints clean: a fixed, non-personalised oral solution.
const SKELETON: &str = r#"# A new Galen compounding recipe. Format: recipes/src/authoring.rs; examples: recipes/examples/.

[recipe]
id = "@ID@"
revision = 1
name = "Describe the product"
min_appliance_version = "0.1.0"
unit_models = ["galen-cu1"]
second_person = ["patient-id", "material-lot"]

[[material]]
id = "active"
name = "Active ingredient"
form = "solid"
concentration_mg_per_g = 1000

[[material]]
id = "water"
name = "Purified water"
form = "liquid"
density_g_per_ml = 1.0

[[equipment]]
kind = "balance"
capacity_g = 500
readability_g = 0.001

[[equipment]]
kind = "peristaltic-pump"
max_rate_ml_per_min = 100

[[equipment]]
kind = "mixer"
max_rpm = 1500

[[unit_procedure]]
id = "compound"
name = "Compound"

[[unit_procedure.operation]]
id = "weigh"
name = "Weigh"

[[unit_procedure.operation.phase]]
id = "scan-active"
kind = "scan"
material = "active"
resume = "repeat"

[[unit_procedure.operation.phase]]
id = "tare"
kind = "tare"
resume = "repeat"

[[unit_procedure.operation.phase]]
id = "dispense-active"
kind = "dispense"
material = "active"
mass_g = 1.0
tolerance_g = 0.005
resume = "qa-decision"

[[unit_procedure.operation.phase]]
id = "dispense-water"
kind = "dispense"
material = "water"
mass_g = 99.0
tolerance_g = 0.5
pump = "peristaltic-pump"
resume = "qa-decision"

[[unit_procedure.operation.phase]]
id = "mix"
kind = "mix"
speed_rpm = 500
duration_s = 300
resume = "resume"

# What the label says besides the patient, batch and dates. USP <795> (2023) without a
# stability study: aqueous, not preserved, 14 days refrigerated; preserved, 35 days.
[label]
beyond_use_days = 14
storage = "Store refrigerated at 2–8 °C."
auxiliary = ["For oral use only"]
"#;
