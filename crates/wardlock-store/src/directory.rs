//! The user directory cached on the workstation: enrolling, changing and disabling
//! users. Every change is audited in the same transaction that makes it.

use zeroize::Zeroizing;

use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::Policy;
use wardlock_core::secret::SecretString;
use wardlock_core::unlock::{self, PinRuleError, TotpSeed};

use crate::secrets::{DataKey, SecretError};
use crate::store::{Store, StoreError, UserRow};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("user ID {0:?} is not valid: use 1–64 letters, digits, '.', '_', '-' or '@'")]
    BadUserId(String),
    #[error("{field} must be 1–128 printable characters")]
    BadText { field: &'static str },
    #[error("user {0:?} already exists; use `user reset` or `user disable` to change it")]
    UserExists(String),
    #[error("no user {0:?} on this workstation; `user list` shows who is enrolled")]
    UnknownUser(String),
    #[error("PIN refused: {0}")]
    PinRule(PinRuleError),
    #[error("{0}")]
    Crypto(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who makes a change, for the audit entry.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The administrator's Wardlock user ID, when known.
    pub admin: Option<String>,
    /// The OS account the change came from.
    pub os_account: Option<String>,
}

#[derive(Debug)]
pub struct NewUser {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub pin: Option<SecretString>,
    pub totp: bool,
}

/// What enrollment hands back to show once: the authenticator URI (a secret).
#[derive(Debug, Default)]
pub struct Enrollment {
    pub totp_uri: Option<Zeroizing<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub disabled: bool,
    pub has_pin: bool,
    pub has_totp: bool,
}

impl From<PinRuleError> for DirectoryError {
    fn from(e: PinRuleError) -> Self {
        DirectoryError::PinRule(e)
    }
}

pub fn validate_user_id(id: &str) -> Result<(), DirectoryError> {
    let ok = !id.is_empty()
        && id.chars().count() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::BadUserId(id.to_owned()))
    }
}

fn validate_text(field: &'static str, value: &str) -> Result<(), DirectoryError> {
    let ok = !value.trim().is_empty() && value.chars().count() <= 128 && !value.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::BadText { field })
    }
}

fn draft(kind: AuditKind, user: &str, actor: &Actor, policy: &Policy, now: UtcMillis) -> AuditDraft {
    let mut d =
        AuditDraft::new(now, kind).user(user).os_account(actor.os_account.clone()).policy_hash(policy.hash());
    if let Some(admin) = &actor.admin {
        d = d.detail("by", admin);
    }
    d
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, DirectoryError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::getrandom(&mut bytes[..]).map_err(|e| DirectoryError::Crypto(e.to_string()))?;
    Ok(bytes)
}

/// Hashes a new PIN (after the policy's rules) and seals the hash for `user_id`.
fn hash_pin(
    key: &DataKey,
    user_id: &str,
    pin: &SecretString,
    policy: &Policy,
) -> Result<Vec<u8>, DirectoryError> {
    unlock::check_pin_rules(pin, &policy.pin)?;
    let salt = random::<16>()?;
    let hash = unlock::hash_pin(pin, &salt).map_err(|e| DirectoryError::Crypto(e.to_string()))?;
    Ok(seal_pin_hash(key, user_id, hash.as_phc())?)
}

/// What a sealed PIN hash is bound to: its user, and being a PIN hash (a sealed TOTP seed
/// moved into the PIN column does not open).
fn pin_context(user_id: &str) -> Vec<u8> {
    [b"pin-hash\0".as_slice(), user_id.as_bytes()].concat()
}

/// Seals an Argon2id PHC string with the data key, bound to `user_id`.
pub fn seal_pin_hash(key: &DataKey, user_id: &str, phc: &str) -> Result<Vec<u8>, SecretError> {
    key.seal(phc.as_bytes(), &pin_context(user_id))
}

/// Opens a sealed PIN hash; `None` when it is not valid UTF-8 once opened.
pub fn open_pin_hash(
    key: &DataKey,
    user_id: &str,
    sealed: &[u8],
) -> Result<Option<Zeroizing<String>>, SecretError> {
    let bytes = key.open(sealed, &pin_context(user_id))?;
    Ok(std::str::from_utf8(&bytes).ok().map(|s| Zeroizing::new(s.to_owned())))
}

/// Seals the PIN hashes an earlier release kept in the clear, in one transaction with
/// the audit entry that says so. Returns how many there were.
pub fn seal_plain_pin_hashes(
    store: &mut Store,
    key: &DataKey,
    policy: &Policy,
    now: UtcMillis,
) -> Result<usize, DirectoryError> {
    let mut tx = store.write()?;
    let plain = tx.plain_pin_hashes()?;
    if plain.is_empty() {
        return Ok(0);
    }
    for (id, phc) in &plain {
        tx.seal_pin_hash(id, &seal_pin_hash(key, id, phc)?)?;
    }
    tx.append(
        AuditDraft::new(now, AuditKind::CredentialsResealed)
            .policy_hash(policy.hash())
            .detail("what", "PIN hashes sealed with the data key")
            .detail("users", plain.len()),
    )?;
    tx.commit()?;
    Ok(plain.len())
}

/// A new random TOTP seed: 160 bits, as RFC 4226 recommends.
pub fn generate_totp_seed() -> Result<TotpSeed, DirectoryError> {
    TotpSeed::new(random::<20>()?.to_vec()).map_err(|e| DirectoryError::Crypto(e.to_string()))
}

/// The `otpauth://` URI an authenticator app scans (a secret: show it once).
pub fn totp_uri(
    policy: &Policy,
    seed: &TotpSeed,
    user_id: &str,
) -> Result<Zeroizing<String>, DirectoryError> {
    unlock::totp_uri(&policy.totp, seed, user_id)
        .map(Zeroizing::new)
        .map_err(|e| DirectoryError::Crypto(e.to_string()))
}

/// A new TOTP seed, sealed to the user's row.
fn new_totp(
    key: &DataKey,
    policy: &Policy,
    user_id: &str,
) -> Result<(Vec<u8>, Zeroizing<String>), DirectoryError> {
    let seed = generate_totp_seed()?;
    let uri =
        unlock::totp_uri(&policy.totp, &seed, user_id).map_err(|e| DirectoryError::Crypto(e.to_string()))?;
    let sealed = key.seal(seed.expose(), user_id.as_bytes())?;
    Ok((sealed, Zeroizing::new(uri)))
}

pub fn add_user(
    store: &mut Store,
    key: &DataKey,
    policy: &Policy,
    new: NewUser,
    actor: &Actor,
    now: UtcMillis,
) -> Result<Enrollment, DirectoryError> {
    validate_user_id(&new.id)?;
    validate_text("name", &new.display_name)?;
    validate_text("role", &new.role)?;
    let pin_sealed = new.pin.as_ref().map(|pin| hash_pin(key, &new.id, pin, policy)).transpose()?;
    let (totp_sealed, totp_uri) = match new.totp {
        true => new_totp(key, policy, &new.id).map(|(s, u)| (Some(s), Some(u)))?,
        false => (None, None),
    };
    let row = UserRow {
        id: new.id.clone(),
        display_name: new.display_name,
        role: new.role.clone(),
        disabled: false,
        pin_sealed,
        totp_sealed,
        from_collector: false,
    };
    let mut tx = store.write()?;
    if tx.user(&new.id)?.is_some() {
        return Err(DirectoryError::UserExists(new.id));
    }
    tx.put_user(&row, now)?;
    tx.append(
        draft(AuditKind::UserAdded, &new.id, actor, policy, now)
            .detail("role", &new.role)
            .detail("pin", if row.pin_sealed.is_some() { "set" } else { "none" })
            .detail("totp", if row.totp_sealed.is_some() { "enrolled" } else { "none" }),
    )?;
    tx.commit()?;
    Ok(Enrollment { totp_uri })
}

/// What `change_credentials` changes.
#[derive(Debug, Default)]
pub struct CredentialChange {
    /// New PIN (checked against the PIN rules).
    pub pin: Option<SecretString>,
    /// Issue a new TOTP seed; the old one stops working.
    pub new_totp_seed: bool,
}

/// Sets or resets a user's PIN and/or TOTP seed.
pub fn change_credentials(
    store: &mut Store,
    key: &DataKey,
    policy: &Policy,
    user_id: &str,
    change: &CredentialChange,
    actor: &Actor,
    now: UtcMillis,
) -> Result<Enrollment, DirectoryError> {
    let pin_sealed = change.pin.as_ref().map(|p| hash_pin(key, user_id, p, policy)).transpose()?;
    let totp = if change.new_totp_seed { Some(new_totp(key, policy, user_id)?) } else { None };
    let mut tx = store.write()?;
    let mut row = tx.user(user_id)?.ok_or_else(|| DirectoryError::UnknownUser(user_id.to_owned()))?;
    let mut d = draft(AuditKind::UserChanged, user_id, actor, policy, now);
    if let Some(sealed) = pin_sealed {
        row.pin_sealed = Some(sealed);
        d = d.detail("pin", "reset");
    }
    let mut enrollment = Enrollment::default();
    if let Some((sealed, uri)) = totp {
        row.totp_sealed = Some(sealed);
        enrollment.totp_uri = Some(uri);
        d = d.detail("totp", "re-enrolled");
    }
    tx.put_user(&row, now)?;
    tx.append(d)?;
    tx.commit()?;
    Ok(enrollment)
}

/// Stores a TOTP seed the user has already proven (enrollment at the workstation: the
/// seed was shown as a QR code and the code of `proven_step` was checked before this;
/// that step counts as used, so the same code cannot then unlock).
#[allow(clippy::too_many_arguments)]
pub fn set_totp_seed(
    store: &mut Store,
    key: &DataKey,
    policy: &Policy,
    user_id: &str,
    seed: &TotpSeed,
    proven_step: u64,
    actor: &Actor,
    now: UtcMillis,
) -> Result<(), DirectoryError> {
    let sealed = key.seal(seed.expose(), user_id.as_bytes())?;
    let mut tx = store.write()?;
    let mut row = tx.user(user_id)?.ok_or_else(|| DirectoryError::UnknownUser(user_id.to_owned()))?;
    row.totp_sealed = Some(sealed);
    tx.put_user(&row, now)?;
    let mut auth = tx.user_auth(user_id)?;
    auth.last_totp_step = Some(auth.last_totp_step.map_or(proven_step, |s| s.max(proven_step)));
    tx.save_user_auth(user_id, &auth)?;
    tx.append(draft(AuditKind::UserChanged, user_id, actor, policy, now).detail("totp", "enrolled"))?;
    tx.commit()?;
    Ok(())
}

pub fn disable_user(
    store: &mut Store,
    policy: &Policy,
    user_id: &str,
    actor: &Actor,
    now: UtcMillis,
) -> Result<(), DirectoryError> {
    let mut tx = store.write()?;
    let mut row = tx.user(user_id)?.ok_or_else(|| DirectoryError::UnknownUser(user_id.to_owned()))?;
    row.disabled = true;
    tx.put_user(&row, now)?;
    tx.append(draft(AuditKind::UserDisabled, user_id, actor, policy, now))?;
    tx.commit()?;
    Ok(())
}

pub fn list_users(store: &Store) -> Result<Vec<UserSummary>, DirectoryError> {
    Ok(store
        .users()?
        .into_iter()
        .map(|u| UserSummary {
            has_pin: u.pin_sealed.is_some(),
            has_totp: u.totp_sealed.is_some(),
            id: u.id,
            display_name: u.display_name,
            role: u.role,
            disabled: u.disabled,
        })
        .collect())
}

/// What a directory snapshot from the collector changed here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteChanges {
    pub added: u32,
    pub changed: u32,
    pub disabled: u32,
    /// Users left as they were, with why (a bad ID, a secret that did not open).
    pub rejected: Vec<(String, String)>,
    /// Administrators (or users the directory calls `admin`) whose role or credentials
    /// IT's grant does not cover, with why: not made administrators, and their
    /// credentials not taken from the directory.
    pub admin_refused: Vec<(String, String)>,
    /// Users the directory names that exist here as local users (enrolled at this
    /// workstation): left as they are.
    pub local_kept: Vec<String>,
}

/// The role of a directory user whose `admin` role IT did not sign.
pub const NOT_GRANTED_ROLE: &str = "clinician";

/// Where the newest admin grant serial taken for a user is kept.
fn grant_serial_key(user: &str) -> String {
    format!("admin_grant_serial:{user}")
}

/// What IT's grant says of a directory user's admin role and credentials.
#[derive(Debug)]
enum AdminCheck {
    /// A trusted key granted the role with exactly these credentials, valid now.
    Granted { serial: u64 },
    /// IT signed these credentials, but the role does not hold now (expired, rolled back).
    CredentialsOnly(String),
    /// Nothing IT signed covers these credentials.
    Refused(String),
}

/// IT's grant for `user`, checked against the credentials the directory brings.
fn check_admin(
    policy: &Policy,
    user: &wardlock_core::protocol::collector::DirectoryUser,
    credential: &str,
    newest: Option<u64>,
    now: UtcMillis,
) -> AdminCheck {
    let trusted: Vec<_> = policy
        .sync
        .trusted_keys
        .iter()
        .filter_map(|k| wardlock_core::policy::parse_public_key(k).ok())
        .collect();
    let Some(envelope) = user.admin_grant.as_deref() else {
        return AdminCheck::Refused("no grant signed by a trusted key".into());
    };
    let grant = match wardlock_core::policy::AdminGrant::verify(envelope, &user.id, &trusted) {
        Ok(grant) => grant,
        Err(e) => return AdminCheck::Refused(format!("its grant does not verify: {e}")),
    };
    match grant.holds(credential, newest, now) {
        Ok(()) => AdminCheck::Granted { serial: grant.serial },
        Err(e @ wardlock_core::policy::GrantRefusal::CredentialChanged) => AdminCheck::Refused(e.to_string()),
        Err(e) => AdminCheck::CredentialsOnly(e.to_string()),
    }
}

/// Applies the collector's directory: its users are added or updated (TOTP seeds opened
/// with this workstation's transport key and sealed again with the data key); users that
/// came from the directory and are no longer in it are disabled. Local users (enrolled
/// here) stay. One transaction; every change audited with `by: collector`.
pub fn apply_remote(
    store: &mut Store,
    key: &DataKey,
    policy: &Policy,
    remote: &wardlock_core::protocol::collector::Directory,
    transport_secret: &[u8],
    now: UtcMillis,
) -> Result<RemoteChanges, DirectoryError> {
    use base64::Engine as _;
    let actor = Actor { admin: Some("collector".into()), os_account: None };
    let mut changes = RemoteChanges::default();
    let mut tx = store.write()?;
    let mut seen = std::collections::HashSet::new();
    for u in &remote.users {
        if validate_user_id(&u.id).is_err() || validate_text("name", &u.display_name).is_err() {
            changes.rejected.push((u.id.chars().take(64).collect(), "not a valid user ID or name".into()));
            continue;
        }
        seen.insert(u.id.clone());
        let before = tx.user(&u.id)?;
        if before.as_ref().is_some_and(|b| !b.from_collector) {
            // Enrolled here by an administrator: the directory does not replace them.
            changes.local_kept.push(u.id.clone());
            continue;
        }
        let mut totp_opened = None;
        let totp_sealed = match &u.totp_sealed {
            None => None,
            Some(text) => {
                let opened = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .and_then(|b| wardlock_core::transport::open(transport_secret, &b, u.id.as_bytes()).ok());
                match opened {
                    Some(seed) => {
                        let sealed = key.seal(&seed, u.id.as_bytes())?;
                        totp_opened = Some(seed);
                        Some(sealed)
                    }
                    None => {
                        changes.rejected.push((
                            u.id.clone(),
                            "its TOTP secret did not open with this workstation's key".into(),
                        ));
                        continue;
                    }
                }
            }
        };
        // The PIN hash comes sealed to this workstation, and is kept sealed with the data key.
        let mut pin_opened = None;
        let pin_sealed = match &u.pin_sealed {
            None => None,
            Some(text) => {
                let context = wardlock_core::protocol::collector::pin_hash_context(&u.id);
                let opened = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .and_then(|b| wardlock_core::transport::open(transport_secret, &b, &context).ok())
                    .and_then(|phc| String::from_utf8(phc.to_vec()).ok().map(zeroize::Zeroizing::new));
                match opened {
                    Some(phc) => {
                        let sealed = seal_pin_hash(key, &u.id, &phc)?;
                        pin_opened = Some(phc);
                        Some(sealed)
                    }
                    None => {
                        changes.rejected.push((
                            u.id.clone(),
                            "its PIN hash did not open with this workstation's key".into(),
                        ));
                        continue;
                    }
                }
            }
        };
        // A collector alone never makes an administrator, nor changes one's credentials:
        // both need IT's signature over exactly these credentials. Without it, an
        // administrator here keeps the credentials held here and loses the role.
        let is_admin_here = before.as_ref().is_some_and(|b| b.role == super::auth::ADMIN_ROLE);
        let (mut role, mut pin_sealed, mut totp_sealed) = (u.role.clone(), pin_sealed, totp_sealed);
        if u.role == super::auth::ADMIN_ROLE || is_admin_here {
            let credential = wardlock_core::policy::admin_credential_digest(
                &u.id,
                pin_opened.as_ref().map(|p| p.as_str()),
                totp_opened.as_deref().map(|s| &s[..]),
            );
            let newest = tx.meta(&grant_serial_key(&u.id))?.and_then(|s| s.parse().ok());
            match check_admin(policy, u, &credential, newest, now) {
                AdminCheck::Granted { serial } if u.role == super::auth::ADMIN_ROLE => {
                    tx.set_meta(&grant_serial_key(&u.id), &serial.to_string())?;
                }
                AdminCheck::Granted { .. } => {}
                AdminCheck::CredentialsOnly(why) => {
                    changes
                        .admin_refused
                        .push((u.id.clone(), format!("{why}; kept as a {NOT_GRANTED_ROLE}")));
                    role = NOT_GRANTED_ROLE.to_owned();
                }
                AdminCheck::Refused(why) => {
                    // Never the unsigned directory's credentials for an administrator: the
                    // ones held here stay (a new user gets none, and cannot unlock).
                    changes.admin_refused.push((
                        u.id.clone(),
                        format!(
                            "{why}; not an administrator, and the directory's credentials were not taken"
                        ),
                    ));
                    role = NOT_GRANTED_ROLE.to_owned();
                    pin_sealed = before.as_ref().and_then(|b| b.pin_sealed.clone());
                    totp_sealed = before.as_ref().and_then(|b| b.totp_sealed.clone());
                }
            }
        }
        let row = UserRow {
            id: u.id.clone(),
            display_name: u.display_name.clone(),
            role,
            disabled: u.disabled,
            pin_sealed,
            totp_sealed,
            from_collector: true,
        };
        let kind = match &before {
            None => AuditKind::UserAdded,
            Some(b) if !b.disabled && row.disabled => AuditKind::UserDisabled,
            Some(b) => {
                // A re-sealed seed differs in its nonce; compare what it opens to.
                let same_totp = match (&b.totp_sealed, &row.totp_sealed) {
                    (None, None) => true,
                    (Some(x), Some(y)) => {
                        key.open(x, u.id.as_bytes()).ok() == key.open(y, u.id.as_bytes()).ok()
                    }
                    _ => false,
                };
                let opened = |sealed: &Option<Vec<u8>>| {
                    sealed.as_deref().map(|s| open_pin_hash(key, &u.id, s).ok().flatten())
                };
                let same_pin = opened(&b.pin_sealed) == opened(&row.pin_sealed);
                if b.display_name == row.display_name
                    && b.role == row.role
                    && b.disabled == row.disabled
                    && same_pin
                    && same_totp
                {
                    continue;
                }
                AuditKind::UserChanged
            }
        };
        tx.put_user(&row, now)?;
        let mut d = draft(kind, &u.id, &actor, policy, now).detail("role", &u.role);
        if kind == AuditKind::UserChanged && row.disabled {
            d = d.detail("disabled", "true");
        }
        tx.append(d)?;
        match kind {
            AuditKind::UserAdded => changes.added += 1,
            AuditKind::UserDisabled => changes.disabled += 1,
            _ => changes.changed += 1,
        }
    }
    for mut row in tx.users()? {
        if row.from_collector && !row.disabled && !seen.contains(&row.id) {
            row.disabled = true;
            tx.put_user(&row, now)?;
            tx.append(
                draft(AuditKind::UserDisabled, &row.id, &actor, policy, now)
                    .detail("why", "no longer in the directory"),
            )?;
            changes.disabled += 1;
        }
    }
    tx.commit()?;
    Ok(changes)
}
