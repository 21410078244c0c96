//! The relay's libp2p identity: an ed25519 seed in the data dir (`relay.key`), created on
//! first start with 0600 permissions and reused across restarts (nodes pin the relay's PeerId).

use std::path::Path;

use ed25519_dalek::SigningKey;

pub fn load_or_create(data_dir: &Path) -> std::io::Result<SigningKey> {
    concord_net::identity::load_or_create_key(&data_dir.join("relay.key"))
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
