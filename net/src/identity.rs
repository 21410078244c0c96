//! A node's device key is its libp2p identity: the same ed25519 key signs Concord envelopes
//! and proves the PeerId in the Noise handshake. These helpers convert between the two.

use concord_proto::b64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};

/// The libp2p keypair for an ed25519 seed.
pub fn keypair(device: &SigningKey) -> Keypair {
    let secret = ed25519::SecretKey::try_from_bytes(device.to_bytes())
        .expect("32 bytes are a valid ed25519 secret");
    Keypair::from(ed25519::Keypair::from(secret))
}

pub fn peer_id(device: &VerifyingKey) -> PeerId {
    let key = ed25519::PublicKey::try_from_bytes(device.as_bytes())
        .expect("a verifying key is a valid public key");
    PeerId::from_public_key(&PublicKey::from(key))
}

/// The Concord device key (base64url ed25519) behind a PeerId, when it is an ed25519 identity.
pub fn device_key(peer: &PeerId) -> Option<String> {
    // Ed25519 PeerIds inline the public key (identity multihash).
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(b64::encode(ed.to_bytes()))
}

/// The PeerId of a base64url device key.
pub fn peer_id_of_device_key(device_key: &str) -> Option<PeerId> {
    let bytes = b64::decode_array::<32>(device_key)?;
    let key = VerifyingKey::from_bytes(&bytes).ok()?;
    Some(peer_id(&key))
}

/// A server's persistent libp2p identity: an ed25519 seed (base64url) in `path`, created on
/// first start with 0600 permissions and reused across restarts (peers pin the PeerId).
pub fn load_or_create_key(path: &std::path::Path) -> std::io::Result<SigningKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
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
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(file, "{}", b64::encode(seed))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_and_peer_ids_round_trip() {
        let device = SigningKey::from_bytes(&[2u8; 32]);
        let kp = keypair(&device);
        let peer = kp.public().to_peer_id();
        assert_eq!(peer, peer_id(&device.verifying_key()));
        let key = device_key(&peer).unwrap();
        assert_eq!(key, "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q");
        assert_eq!(peer_id_of_device_key(&key), Some(peer));
        assert_eq!(peer_id_of_device_key("nope"), None);
        assert_eq!(device_key(&PeerId::random()), None);
    }
}
