use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use wardlock_core::policy::{self, Layer, Policy, PolicyDocument, SignedPolicy, SignedPolicyBody};
use wardlock_store::machine_policy::{MachineDocument, MachinePolicy};
use wardlock_store::private_fs;
use zeroize::Zeroizing;

use crate::context::now;
use crate::Verdict;

const PRIVATE_KEY_FILE: &str = "policy-signing.key";
const PUBLIC_KEY_FILE: &str = "policy-signing.pub";

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Push a signed policy to the collector for a workstation group (needs --server)
    #[command(
        after_help = "Example:\n  wardlockctl --server https://collector:8443 --token $TOKEN policy push icu.signed.json --group icu"
    )]
    Push {
        file: PathBuf,
        #[arg(long)]
        group: String,
    },
    /// Check a policy file and print the effective policy, or list every problem. A
    /// machine policy is checked with the drop-ins of its policy.d/ laid over it, as
    /// wardlockd reads them
    #[command(after_help = "Example:\n  wardlockctl policy check /etc/wardlock/policy.toml")]
    Check {
        file: PathBuf,
        /// Check it as a central policy (which may not set machine-only keys)
        #[arg(long)]
        central: bool,
    },
    /// Make an Ed25519 key pair for signing central policies
    #[command(after_help = "Example:\n  wardlockctl policy keygen --out /root/wardlock-keys\n\
        Keep policy-signing.key offline; put policy-signing.pub in sync.trusted_keys.")]
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key pair
        #[arg(long)]
        force: bool,
    },
    /// Sign a central policy (it is checked first; an invalid policy is never signed)
    #[command(
        after_help = "Example:\n  wardlockctl policy sign icu.toml --key keys/policy-signing.key --group icu --out icu.signed.json\nA draft kept in the console, signed here and stored for its group:\n  wardlockctl --server https://collector:8443 --token $TOKEN policy sign --draft 7 --key keys/policy-signing.key"
    )]
    Sign {
        /// The policy file (TOML); or --draft ID for a change drafted in the console
        #[arg(required_unless_present = "draft")]
        file: Option<PathBuf>,
        #[arg(long)]
        key: PathBuf,
        /// Where the signed policy goes; with --draft it is pushed to the collector
        #[arg(long, required_unless_present = "draft")]
        out: Option<PathBuf>,
        /// Sign a draft from the console (GET /api/v1/policy-drafts/ID) and push it to its
        /// group (needs --server); the key stays on this machine
        #[arg(long, value_name = "ID", conflicts_with_all = ["file", "out", "group"])]
        draft: Option<i64>,
        /// Workstation group the policy is for (all groups if not given)
        #[arg(long)]
        group: Option<String>,
        /// Must increase with each policy issued [default: the current Unix time]
        #[arg(long)]
        serial: Option<u64>,
    },
    /// Verify a signed policy against a public key
    #[command(
        after_help = "Example:\n  wardlockctl policy verify icu.signed.json --pubkey keys/policy-signing.pub"
    )]
    Verify {
        signed: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
    },
}

pub fn run(cmd: PolicyCommand, server: &crate::server::ServerArgs) -> Result<Verdict> {
    match cmd {
        PolicyCommand::Push { file, group } => crate::server::policy_push(&server.require()?, &file, &group),
        PolicyCommand::Check { file, central } => check(&file, central),
        PolicyCommand::Keygen { out, force } => keygen(&out, force),
        PolicyCommand::Sign { draft: Some(id), key, serial, .. } => {
            sign_draft(&server.require()?, id, &key, serial)
        }
        PolicyCommand::Sign { file: Some(file), key, out: Some(out), group, serial, .. } => {
            sign(&file, &key, &out, group, serial)
        }
        PolicyCommand::Sign { .. } => bail!("give a policy file and --out, or --draft ID"),
        PolicyCommand::Verify { signed, pubkey } => verify(&signed, &pubkey),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn check(file: &Path, central: bool) -> Result<Verdict> {
    let (layer, files) = if central {
        (
            Layer::Central,
            MachinePolicy {
                documents: vec![MachineDocument { source: file.display().to_string(), text: read(file)? }],
            },
        )
    } else {
        (Layer::Machine, MachinePolicy::read(file, true).map_err(anyhow::Error::msg)?)
    };
    let parsed = files
        .documents
        .iter()
        .map(|d| PolicyDocument::parse(&d.source, layer, &d.text))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|docs| Policy::layered(&docs));
    match parsed {
        Ok(policy) => {
            println!("# {}: valid. Effective policy (built-in defaults + these files):", files.source_name());
            println!("# policy hash {}", policy.hash());
            print!("{}", policy.to_toml());
            Ok(Verdict::Ok)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(Verdict::Failed)
        }
    }
}

fn keygen(out: &Path, force: bool) -> Result<Verdict> {
    let private = out.join(PRIVATE_KEY_FILE);
    let public = out.join(PUBLIC_KEY_FILE);
    if !force && (private.exists() || public.exists()) {
        bail!("{} already holds a key pair; pass --force to replace it (policies signed with the old key will no longer verify against the new one)", out.display());
    }
    private_fs::create_dir(out).with_context(|| format!("creating {}", out.display()))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut seed[..]).context("reading OS randomness")?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key.to_pkcs8_pem(Default::default()).context("encoding the private key")?;
    private_fs::replace(&private, pem.as_bytes())
        .with_context(|| format!("writing {}", private.display()))?;
    fs::write(&public, policy::public_key_pem(&key.verifying_key()))
        .with_context(|| format!("writing {}", public.display()))?;
    println!("private key: {} (keep it offline; readable by you only)", private.display());
    println!("public key:  {}", public.display());
    println!("key id:      {}", policy::key_id(&key.verifying_key()));
    Ok(Verdict::Ok)
}

/// IT's private signing key, as `policy keygen` wrote it.
pub fn read_signing_key(key_path: &Path) -> Result<SigningKey> {
    let pem = Zeroizing::new(read(key_path)?);
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        anyhow::anyhow!("{} is not an Ed25519 private key (PKCS#8 PEM): {e}", key_path.display())
    })
}

fn sign(
    file: &Path,
    key_path: &Path,
    out: &Path,
    group: Option<String>,
    serial: Option<u64>,
) -> Result<Verdict> {
    let text = read(file)?;
    if let Err(e) = PolicyDocument::parse(&file.display().to_string(), Layer::Central, &text) {
        eprintln!("{e}");
        eprintln!("not signed: fix the problems above first");
        return Ok(Verdict::Failed);
    }
    let key = read_signing_key(key_path)?;
    let issued_at = now();
    let body = SignedPolicyBody {
        serial: serial.unwrap_or_else(|| issued_at.unix_seconds()),
        issued_at,
        group,
        policy: text,
    };
    let signed = SignedPolicy::sign(&body, &key);
    fs::write(out, signed.to_json() + "\n").with_context(|| format!("writing {}", out.display()))?;
    println!(
        "signed {} with key {} (serial {}) -> {}",
        file.display(),
        signed.key_id,
        body.serial,
        out.display()
    );
    Ok(Verdict::Ok)
}

/// Signs a draft kept on the collector and stores it for the draft's group: checked here
/// again by core's validation, so what is signed is what this machine read.
fn sign_draft(
    server: &crate::server::Server,
    id: i64,
    key_path: &Path,
    serial: Option<u64>,
) -> Result<Verdict> {
    let draft: wardlock_core::protocol::collector::PolicyDraft =
        server.typed::<(), _>("GET", &format!("/api/v1/policy-drafts/{id}"), None)?;
    if let Err(e) = PolicyDocument::parse(&format!("draft {id}"), Layer::Central, &draft.policy) {
        eprintln!("{e}");
        eprintln!("not signed: the draft does not pass the policy rules");
        return Ok(Verdict::Failed);
    }
    println!("# draft {id} for group {} by {}:\n{}", draft.group, draft.author, draft.policy.trim_end());
    let key = read_signing_key(key_path)?;
    let issued_at = now();
    let body = SignedPolicyBody {
        serial: serial.unwrap_or_else(|| issued_at.unix_seconds()),
        issued_at,
        group: Some(draft.group.clone()),
        policy: draft.policy,
    };
    let signed = SignedPolicy::sign(&body, &key);
    let stored: wardlock_core::protocol::collector::PolicyStored = server.typed(
        "PUT",
        &format!("/api/v1/admin/policies/{}", crate::server::encode(&draft.group)),
        Some(&signed),
    )?;
    println!(
        "signed draft {id} with key {} (serial {}) and stored it for group {}",
        signed.key_id, stored.serial, stored.group
    );
    Ok(Verdict::Ok)
}

fn verify(signed_path: &Path, pubkey_path: &Path) -> Result<Verdict> {
    let key = policy::parse_public_key(&read(pubkey_path)?)
        .with_context(|| format!("reading {}", pubkey_path.display()))?;
    let outcome = SignedPolicy::from_json(&read(signed_path)?).and_then(|s| s.verify(&[key]));
    let body = match outcome {
        Ok(body) => body,
        Err(e) => {
            eprintln!("{}: REFUSED: {e}", signed_path.display());
            return Ok(Verdict::Failed);
        }
    };
    let name = format!("{} (signed policy)", signed_path.display());
    if let Err(e) = PolicyDocument::parse(&name, Layer::Central, &body.policy) {
        eprintln!("{}: signature good, but the policy inside is not valid here:\n{e}", signed_path.display());
        return Ok(Verdict::Failed);
    }
    println!(
        "{}: signature good (key {}), serial {}, issued {}, group {}",
        signed_path.display(),
        policy::key_id(&key),
        body.serial,
        body.issued_at,
        body.group.as_deref().unwrap_or("(all)")
    );
    Ok(Verdict::Ok)
}
