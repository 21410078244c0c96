//! The relay's libp2p identity: an ed25519 seed in the data dir, created on first start with
//! 0600 permissions and reused across restarts (nodes pin the relay's PeerId).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use concord_proto::b64;
use ed25519_dalek::SigningKey;

pub fn load_or_create(data_dir: &Path) -> std::io::Result<SigningKey> {
    let path = data_dir.join("relay.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let seed = b64::decode_array::<32>(text.trim()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a base64url ed25519 seed", path.display()),
                )
            })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(file, "{}", b64::encode(seed))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        let mode = std::fs::metadata(dir.path().join("relay.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("relay.key"), "garbage").unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
