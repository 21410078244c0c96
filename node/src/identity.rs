//! The node's keys, in its data dir with 0600 permissions: the device key (also its libp2p
//! identity), the account key on the device that created the account, and the device
//! certificate the account key signed. No key ever leaves the machine as bytes. Also linking
//! a new device to an existing account.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use concord_proto::b64;
use concord_proto::signed::{DeviceCertificate, public_key_string};
use ed25519_dalek::SigningKey;

const DEVICE_KEY: &str = "device.key";
const ACCOUNT_KEY: &str = "account.key";
const CERTIFICATE: &str = "device.cert.json";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} is not a base64url ed25519 seed")]
    BadKey(PathBuf),
    #[error("{0}: {1}")]
    BadCertificate(PathBuf, String),
    #[error("no identity in {0}: run `concord init` first")]
    Missing(PathBuf),
    #[error("{0} already holds an identity")]
    Exists(PathBuf),
}

pub struct Identity {
    pub device: SigningKey,
    /// Only on the device that created the account (it certifies other devices).
    pub account: Option<SigningKey>,
    /// Absent on a linked device: its certificate lives at the relay, where the linking
    /// device registered it.
    pub certificate: Option<DeviceCertificate>,
}

impl Identity {
    pub fn device_key(&self) -> String {
        public_key_string(&self.device.verifying_key())
    }

    /// The account key, when this device holds its certificate.
    pub fn account_key(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.account_key.as_str())
    }

    pub fn peer_id(&self) -> libp2p::PeerId {
        concord_net::identity::peer_id(&self.device.verifying_key())
    }

    pub fn keypair(&self) -> libp2p::identity::Keypair {
        concord_net::identity::keypair(&self.device)
    }
}

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random source works");
    SigningKey::from_bytes(&seed)
}

/// Writes `contents` to a new file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let io = |e| IdentityError::Io(path.to_owned(), e);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)
}

fn read_key(path: &Path) -> Result<SigningKey, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|e| IdentityError::Io(path.to_owned(), e))?;
    let seed = b64::decode_array::<32>(text.trim())
        .ok_or_else(|| IdentityError::BadKey(path.to_owned()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Creates the account key, this device's key and its certificate (`concord init`).
pub fn init(dir: &Path, label: &str) -> Result<Identity, IdentityError> {
    std::fs::create_dir_all(dir).map_err(|e| IdentityError::Io(dir.to_owned(), e))?;
    if dir.join(DEVICE_KEY).exists() {
        return Err(IdentityError::Exists(dir.to_owned()));
    }
    let account = random_key();
    let device = random_key();
    let certificate = DeviceCertificate::sign(&account, &device.verifying_key(), label, now_secs());
    write_private(
        &dir.join(ACCOUNT_KEY),
        format!("{}\n", b64::encode(account.to_bytes())).as_bytes(),
    )?;
    write_private(
        &dir.join(DEVICE_KEY),
        format!("{}\n", b64::encode(device.to_bytes())).as_bytes(),
    )?;
    let cert = serde_json::to_vec_pretty(&certificate).expect("certificates serialise");
    write_private(&dir.join(CERTIFICATE), &cert)?;
    Ok(Identity {
        device,
        account: Some(account),
        certificate: Some(certificate),
    })
}

/// Creates only a device key, for a device that another device will certify
/// (`concord init --link`); the certificate is stored later with [`store_certificate`].
pub fn init_unlinked(dir: &Path) -> Result<SigningKey, IdentityError> {
    std::fs::create_dir_all(dir).map_err(|e| IdentityError::Io(dir.to_owned(), e))?;
    if dir.join(DEVICE_KEY).exists() {
        return Err(IdentityError::Exists(dir.to_owned()));
    }
    let device = random_key();
    write_private(
        &dir.join(DEVICE_KEY),
        format!("{}\n", b64::encode(device.to_bytes())).as_bytes(),
    )?;
    Ok(device)
}

pub fn store_certificate(dir: &Path, certificate: &DeviceCertificate) -> Result<(), IdentityError> {
    let path = dir.join(CERTIFICATE);
    certificate
        .verify()
        .map_err(|e| IdentityError::BadCertificate(path.clone(), e.to_string()))?;
    let device = read_key(&dir.join(DEVICE_KEY))?;
    if certificate.device_key != public_key_string(&device.verifying_key()) {
        return Err(IdentityError::BadCertificate(
            path,
            "it certifies another device key".into(),
        ));
    }
    write_private(
        &path,
        &serde_json::to_vec_pretty(certificate).expect("certificates serialise"),
    )
}

pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
    let device_path = dir.join(DEVICE_KEY);
    if !device_path.exists() {
        return Err(IdentityError::Missing(dir.to_owned()));
    }
    let device = read_key(&device_path)?;
    let account_path = dir.join(ACCOUNT_KEY);
    let account = if account_path.exists() {
        Some(read_key(&account_path)?)
    } else {
        None
    };
    let cert_path = dir.join(CERTIFICATE);
    let certificate = if cert_path.exists() {
        let text =
            std::fs::read(&cert_path).map_err(|e| IdentityError::Io(cert_path.clone(), e))?;
        let certificate: DeviceCertificate = serde_json::from_slice(&text)
            .map_err(|e| IdentityError::BadCertificate(cert_path.clone(), e.to_string()))?;
        certificate
            .verify()
            .map_err(|e| IdentityError::BadCertificate(cert_path.clone(), e.to_string()))?;
        if certificate.device_key != public_key_string(&device.verifying_key()) {
            return Err(IdentityError::BadCertificate(
                cert_path,
                "it certifies another device key".into(),
            ));
        }
        Some(certificate)
    } else {
        None
    };
    Ok(Identity {
        device,
        account,
        certificate,
    })
}

/// Certifies another device's key with this device's account key (`concord device link`).
pub fn certify(
    identity: &Identity,
    device_key: &str,
    label: &str,
) -> Result<DeviceCertificate, String> {
    let account = identity
        .account
        .as_ref()
        .ok_or("only the device that created the account holds the account key")?;
    let key = concord_proto::signed::parse_public_key(device_key, "device_key")
        .map_err(|e| e.to_string())?;
    concord_proto::limits::name("label", label).map_err(|e| e.to_string())?;
    Ok(DeviceCertificate::sign(account, &key, label, now_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_load_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let created = init(dir.path(), "laptop").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(created.device_key(), loaded.device_key());
        assert_eq!(loaded.certificate.as_ref().unwrap().label, "laptop");
        for f in [DEVICE_KEY, ACCOUNT_KEY, CERTIFICATE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(matches!(
            init(dir.path(), "again"),
            Err(IdentityError::Exists(_))
        ));
        assert!(matches!(
            load(&dir.path().join("nope")),
            Err(IdentityError::Missing(_))
        ));
    }

    #[test]
    fn linking_a_second_device() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = init(a.path(), "laptop").unwrap();
        let second_key = init_unlinked(b.path()).unwrap();
        let cert = certify(
            &first,
            &public_key_string(&second_key.verifying_key()),
            "phone",
        )
        .unwrap();
        store_certificate(b.path(), &cert).unwrap();
        let second = load(b.path()).unwrap();
        assert!(second.account.is_none());
        assert_eq!(second.account_key(), first.account_key());
        // A linked device without its certificate file still loads (the relay holds it).
        let d = tempfile::tempdir().unwrap();
        init_unlinked(d.path()).unwrap();
        assert!(load(d.path()).unwrap().certificate.is_none());
        // a certificate for another key is refused
        let c = tempfile::tempdir().unwrap();
        init_unlinked(c.path()).unwrap();
        assert!(store_certificate(c.path(), &cert).is_err());
        assert!(certify(&second, &first.device_key(), "x").is_err());
    }
}
