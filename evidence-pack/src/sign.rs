//! Signed bundles, in minisign's own formats (the `minisign` crate): `keygen` writes a key pair
//! (`evidence.key`, `evidence.pub`), `pack --sign KEY` writes `<bundle>.minisig` beside the
//! bundle, and `verify --trust PUB` checks that signature before anything else, so a bundle
//! rewritten whole (checksums and all) and re-signed with another key is told apart from the one
//! the trusted key signed. The real `minisign -Vm BUNDLE -p PUB` checks the same files.
//!
//! Invariants: nothing here prompts unless stdin is a terminal (a password comes from a file, or
//! the key is unencrypted); a key file is never overwritten; the secret key is written with mode
//! 0600; every error says which key signed when a signature was readable.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use crate::Error;

/// File names `keygen` writes in its directory.
pub const SECRET_KEY_FILE: &str = "evidence.key";
pub const PUBLIC_KEY_FILE: &str = "evidence.pub";
/// The signature's suffix, the one `minisign -V` looks for by default.
pub const SIG_SUFFIX: &str = ".minisig";
/// Key, password and signature files are small; anything larger is not one.
const MAX_SMALL_FILE: u64 = 64 * 1024;
/// minisign's own limit on a password.
const MAX_PASSWORD_BYTES: usize = 1024;

/// Where `keygen` takes the secret key's password from.
#[derive(Debug, Clone)]
pub enum Password {
    /// The first line of this file.
    File(PathBuf),
    /// No password: the secret key is written unencrypted.
    Unencrypted,
    /// Ask on the terminal (only when stdin is one).
    Prompt,
}

/// A key pair written by [`keygen`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub secret_key: PathBuf,
    pub public_key: PathBuf,
    pub key_id: String,
    pub encrypted: bool,
}

/// Who signed a bundle, as `verify --trust` found it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signer {
    pub key_id: String,
    pub signature: PathBuf,
    pub trusted_comment: String,
}

/// minisign's key ID: the 8-byte key number as a little-endian integer, 16 hex digits (what
/// `minisign` prints and writes in the public key's comment).
pub fn key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    for (dst, src) in b.iter_mut().zip(keynum) {
        *dst = *src;
    }
    format!("{:016X}", u64::from_le_bytes(b))
}

/// `<bundle>.minisig`.
pub fn signature_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(SIG_SUFFIX);
    PathBuf::from(s)
}

fn read_small(path: &Path, what: &str) -> Result<String, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::Input {
        what: format!("cannot read the {what} {}: {e}", path.display()),
        fix: format!("give the path of the {what}"),
    })?;
    let mut text = String::new();
    file.take(MAX_SMALL_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Input {
            what: format!("the {what} {} is not text: {e}", path.display()),
            fix: format!("give the path of the {what}"),
        })?;
    if text.len() as u64 > MAX_SMALL_FILE {
        return Err(Error::Input {
            what: format!("{} is too large to be a {what}", path.display()),
            fix: format!("give the path of the {what}"),
        });
    }
    Ok(text)
}

/// The password in `path`: its first line, without the line end.
pub fn read_password(path: &Path) -> Result<String, Error> {
    let text = read_small(path, "password file")?;
    let line = text.lines().next().unwrap_or("").to_owned();
    if line.is_empty() {
        return Err(Error::Input {
            what: format!("the password file {} is empty", path.display()),
            fix: "write the password on the file's first line, or use --unencrypted".into(),
        });
    }
    if line.len() > MAX_PASSWORD_BYTES {
        return Err(Error::Input {
            what: format!(
                "the password in {} is longer than {MAX_PASSWORD_BYTES} bytes (minisign's limit)",
                path.display()
            ),
            fix: "use a shorter password".into(),
        });
    }
    Ok(line)
}

fn crypto_err(what: String) -> impl FnOnce(minisign::PError) -> Error {
    move |e| Error::Input {
        what: format!("{what}: {e}"),
        fix: "see `evidence-pack keygen --help`".into(),
    }
}

/// Writes a new key pair into `dir` (created if missing): `evidence.key` (mode 0600) and
/// `evidence.pub`. Refuses when either file exists, so a key is never lost.
pub fn keygen(dir: &Path, password: &Password) -> Result<Written, Error> {
    let secret_path = dir.join(SECRET_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for p in [&secret_path, &public_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(Error::Input {
                what: format!("{} exists; keygen never replaces a key", p.display()),
                fix: "choose another -o DIR, or move the old key pair away first".into(),
            });
        }
    }
    let (pair, encrypted) = match password {
        Password::Unencrypted => (
            KeyPair::generate_unencrypted_keypair()
                .map_err(crypto_err("cannot generate a key pair".into()))?,
            false,
        ),
        Password::File(p) => {
            let pw = read_password(p)?;
            (
                KeyPair::generate_encrypted_keypair(Some(pw))
                    .map_err(crypto_err("cannot generate a key pair".into()))?,
                true,
            )
        }
        Password::Prompt => {
            if !std::io::stdin().is_terminal() {
                return Err(Error::Input {
                    what: "no password given, and stdin is not a terminal, so keygen will not ask for one".into(),
                    fix: "pass --password-file FILE (the password on its first line), or --unencrypted".into(),
                });
            }
            (
                KeyPair::generate_encrypted_keypair(None)
                    .map_err(crypto_err("cannot generate a key pair".into()))?,
                true,
            )
        }
    };
    let id = key_id(pair.pk.keynum());
    let comment = if encrypted {
        "minisign encrypted secret key (evidence-pack keygen)"
    } else {
        "minisign secret key, NOT encrypted (evidence-pack keygen)"
    };
    let secret = pair
        .sk
        .to_box(Some(comment))
        .map_err(crypto_err("cannot encode the secret key".into()))?
        .to_string();
    let public = pair
        .pk
        .to_box()
        .map_err(crypto_err("cannot encode the public key".into()))?
        .to_string();
    let io = |p: &Path| {
        let what = format!("cannot write {}", p.display());
        move |e: std::io::Error| Error::Io { what, source: e }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_new(&secret_path, secret.as_bytes(), 0o600).map_err(io(&secret_path))?;
    if let Err(e) = write_new(&public_path, public.as_bytes(), 0o644) {
        // Leave no half pair behind: the secret key was just written by this call.
        let _ = std::fs::remove_file(&secret_path);
        return Err(io(&public_path)(e));
    }
    Ok(Written {
        secret_key: secret_path,
        public_key: public_path,
        key_id: id,
        encrypted,
    })
}

/// Writes a file that must not exist yet (atomically: a temporary file, then a link that fails
/// if the name was taken meanwhile).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads a minisign secret key: unencrypted, or decrypted with the password in
/// `password_file`; without one, asks on the terminal only when stdin is one.
pub fn load_secret_key(path: &Path, password_file: Option<&Path>) -> Result<SecretKey, Error> {
    let text = read_small(path, "secret key")?;
    let boxed = || {
        SecretKeyBox::from_string(&text).map_err(|e| Error::Input {
            what: format!("{} is not a minisign secret key: {e}", path.display()),
            fix: "give the evidence.key that `evidence-pack keygen` (or `minisign -G`) wrote"
                .into(),
        })
    };
    if let Some(pw_file) = password_file {
        let pw = read_password(pw_file)?;
        return boxed()?
            .into_secret_key(Some(pw))
            .map_err(|e| Error::Input {
                what: format!("cannot decrypt the secret key {}: {e}", path.display()),
                fix: "check the password file (its first line is the password)".into(),
            });
    }
    let e = match boxed()?.into_unencrypted_secret_key() {
        Ok(sk) => return Ok(sk),
        Err(e) => e,
    };
    if let Some(sk) = unencrypted_without_checksum(&text) {
        return Ok(sk);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Input {
            what: format!(
                "cannot read {} as an unencrypted minisign secret key ({e}), and stdin is not a terminal, so no password is asked for",
                path.display()
            ),
            fix: "if the key is encrypted, give its password with --sign-password-file FILE".into(),
        });
    }
    boxed()?.into_secret_key(None).map_err(|e2| Error::Input {
        what: format!(
            "cannot read the secret key {} ({e}; with a password: {e2})",
            path.display()
        ),
        fix: "give the evidence.key that `evidence-pack keygen` wrote, and its password".into(),
    })
}

/// `minisign -G -W` (minisign 0.11) writes an unencrypted secret key whose checksum is all
/// zeros, which the crate refuses as corrupted. Such a key is read from its bytes and checked
/// instead by signing with it: the signature must verify with the public half the key holds.
fn unencrypted_without_checksum(text: &str) -> Option<SecretKey> {
    use ct_codecs::{Base64, Decoder};
    // sig_alg 2, kdf_alg 2, chk_alg 2, salt 32, opslimit 8, memlimit 8, keynum 8, sk 64, chk 32.
    const LEN: usize = 158;
    let line = text.lines().nth(1)?.trim();
    let bytes = Base64::decode_to_vec(line, None).ok()?;
    let unencrypted = bytes.len() == LEN && bytes[2..4] == [0, 0];
    if !unencrypted || bytes[LEN - 32..].iter().any(|b| *b != 0) {
        return None;
    }
    let sk = SecretKey::from_bytes(&bytes).ok()?;
    let pk = PublicKey::from_secret_key(&sk).ok()?;
    minisign::sign(Some(&pk), &sk, &b"key check"[..], Some("key check"), None).ok()?;
    Some(sk)
}

/// The public key of a secret key.
pub fn public_of(sk: &SecretKey) -> Result<PublicKey, Error> {
    PublicKey::from_secret_key(sk).map_err(crypto_err("cannot derive the public key".into()))
}

/// The trusted comment `pack` signs: the bundle's time (from the inputs, not the clock) and its
/// file name, in the layout minisign itself uses.
pub fn trusted_comment(bundle_unix_time: u64, file_name: &str) -> String {
    format!("timestamp:{bundle_unix_time}\tfile:{file_name}\thashed")
}

/// Signs `bytes` (pre-hashed, as `minisign -S` does) and returns the `.minisig` text.
pub fn sign_bytes(sk: &SecretKey, bytes: &[u8], trusted_comment: &str) -> Result<String, Error> {
    let pk = public_of(sk)?;
    let sig = minisign::sign(
        Some(&pk),
        sk,
        std::io::Cursor::new(bytes),
        Some(trusted_comment),
        Some(&format!(
            "signature from evidence-pack, key {}",
            key_id(pk.keynum())
        )),
    )
    .map_err(|e| Error::Input {
        what: format!("cannot sign: {e}"),
        fix: "check the secret key".into(),
    })?;
    Ok(sig.to_string())
}

/// Whether `sig_text` is a valid signature of `bytes` by `pk` (used to keep an existing
/// `.minisig` when the bundle did not change).
pub fn signs(pk: &PublicKey, sig_text: &str, bytes: &[u8]) -> bool {
    SignatureBox::from_string(sig_text).is_ok_and(|sig| {
        minisign::verify(pk, &sig, std::io::Cursor::new(bytes), true, false, false).is_ok()
    })
}

/// Reads a public key file (`evidence.pub`, or one `minisign -G` wrote).
pub fn load_public_key(path: &Path) -> Result<PublicKey, Error> {
    let text = read_small(path, "public key")?;
    PublicKeyBox::from_string(&text)
        .and_then(PublicKeyBox::into_public_key)
        .map_err(|e| Error::Input {
            what: format!("{} is not a minisign public key: {e}", path.display()),
            fix: "give the evidence.pub that `evidence-pack keygen` (or `minisign -G`) wrote"
                .into(),
        })
}

/// Checks `signature` (the `.minisig` beside the bundle) against the bundle's bytes and the
/// trusted public key at `trusted`. Exit 3 (untrusted) when the signature is missing, unreadable,
/// made by another key (named), or does not match the bytes.
pub fn check(bundle: &Path, signature: &Path, trusted: &Path) -> Result<Signer, Error> {
    let pk = load_public_key(trusted)?;
    let trusted_id = key_id(pk.keynum());
    let text = match std::fs::File::open(signature) {
        Ok(f) => {
            let mut text = String::new();
            f.take(MAX_SMALL_FILE)
                .read_to_string(&mut text)
                .map_err(|e| Error::Untrusted {
                    what: format!("the signature {} is not text: {e}", signature.display()),
                })?;
            text
        }
        Err(e) => {
            return Err(Error::Untrusted {
                what: format!(
                    "{} has no signature: cannot read {} ({e}); sign it with `evidence-pack pack --sign KEY`",
                    bundle.display(),
                    signature.display()
                ),
            });
        }
    };
    let sig = SignatureBox::from_string(&text).map_err(|e| Error::Untrusted {
        what: format!("{} is not a minisign signature: {e}", signature.display()),
    })?;
    let signer = key_id(sig.keynum());
    if signer != trusted_id {
        return Err(Error::Untrusted {
            what: format!(
                "{} was signed by key {signer}, not by the trusted key {trusted_id} ({})",
                bundle.display(),
                trusted.display()
            ),
        });
    }
    let file = std::fs::File::open(bundle).map_err(|e| Error::Unreadable {
        what: format!("cannot open {}: {e}", bundle.display()),
    })?;
    minisign::verify(&pk, &sig, std::io::BufReader::new(file), true, false, false).map_err(
        |e| Error::Untrusted {
            what: format!(
                "the signature by key {signer} does not match {} ({e}): the bundle was changed or re-packed after it was signed",
                bundle.display()
            ),
        },
    )?;
    Ok(Signer {
        key_id: signer,
        signature: signature.to_path_buf(),
        trusted_comment: sig.trusted_comment().unwrap_or_default(),
    })
}

/// What happens to `<bundle>.minisig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigWrite {
    Created,
    Replaced,
    /// The existing signature already signs these bytes with this key.
    Unchanged,
}

/// The same rules as for the bundle: never over an input or a file that is not a signature; an
/// existing signature of these bytes by this key is kept; another one is replaced only with
/// `--force`.
pub fn decide_signature(
    plan: &crate::bundle::Plan,
    path: &Path,
    pk: &PublicKey,
    bytes: &[u8],
    force: bool,
) -> Result<SigWrite, Error> {
    let fix = "write the bundle elsewhere (-o FILE, or -o DIR/)";
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(SigWrite::Created),
    };
    if !meta.file_type().is_file() || crate::bundle::is_input(plan, path) {
        return Err(Error::Input {
            what: format!(
                "{} exists and is one of the inputs, or not a regular file; pack does not replace it",
                path.display()
            ),
            fix: fix.into(),
        });
    }
    let old = std::fs::read_to_string(path).unwrap_or_default();
    if signs(pk, &old, bytes) {
        return Ok(SigWrite::Unchanged);
    }
    if !old.starts_with("untrusted comment:") {
        return Err(Error::Input {
            what: format!(
                "{} exists and is not a minisign signature; pack does not replace it",
                path.display()
            ),
            fix: fix.into(),
        });
    }
    if !force {
        return Err(Error::Input {
            what: format!(
                "{} holds a signature of other bytes or by another key; not replaced",
                path.display()
            ),
            fix: format!("pass --force to replace it, or {fix}"),
        });
    }
    Ok(SigWrite::Replaced)
}
