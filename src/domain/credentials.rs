//! Secrets as the master keeps them: API keys and node tokens are held and compared
//! as SHA-256 digests (fixed length, constant time), never as the presented text.
//!
//! A node token binds a node id to the worker that registered it: issued at
//! registration (`request_node_token`), stored hashed, rotated on every
//! re-registration, and required on every node-scoped call of that node.

use subtle::ConstantTimeEq;

/// SHA-256 of a secret.
pub type Digest = [u8; 32];

pub fn digest(secret: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two digests.
pub fn digests_equal(a: &Digest, b: &Digest) -> bool {
    bool::from(a.ct_eq(b))
}

pub fn to_hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh node token: 256 bits from the operating system's CSPRNG, as hex.
pub fn new_token() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    to_hex(&b)
}

/// Why a node-scoped call is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// The node is bound to a token and the call presented none, or another one.
    Invalid,
    /// The node has no token and the master requires one (`--require-node-tokens`).
    Required,
}

impl TokenRefusal {
    pub fn message(&self, node_id: &str) -> String {
        match self {
            TokenRefusal::Invalid => format!(
                "node {node_id} is bound to a node token: send the token it was issued in X-Node-Token \
                 (an admin can DELETE the node to let it register anew)"
            ),
            TokenRefusal::Required => {
                format!("this master requires node tokens: node {node_id} must register with request_node_token=true")
            }
        }
    }
}

/// May a call presenting `presented` act as a node bound to `bound`?
pub fn check_node_token(bound: Option<&Digest>, presented: Option<&str>, required: bool) -> Result<(), TokenRefusal> {
    match (bound, presented) {
        (Some(b), Some(p)) if digests_equal(b, &digest(p)) => Ok(()),
        (Some(_), _) => Err(TokenRefusal::Invalid),
        (None, _) if required => Err(TokenRefusal::Required),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks() {
        let t = new_token();
        let d = digest(&t);
        type Case<'a> = (Option<&'a Digest>, Option<&'a str>, bool, Result<(), TokenRefusal>);
        let cases: Vec<Case> = vec![
            (Some(&d), Some(t.as_str()), false, Ok(())),
            (Some(&d), Some(t.as_str()), true, Ok(())),
            (Some(&d), None, false, Err(TokenRefusal::Invalid)),
            (Some(&d), Some("guess"), false, Err(TokenRefusal::Invalid)),
            (None, None, false, Ok(())),
            (None, Some("anything"), false, Ok(())),
            (None, None, true, Err(TokenRefusal::Required)),
        ];
        for (bound, presented, required, want) in cases {
            assert_eq!(check_node_token(bound, presented, required), want, "{presented:?} required={required}");
        }
    }

    #[test]
    fn tokens_are_fresh_and_hex_round_trips() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let d = digest(&a);
        assert_eq!(from_hex(&to_hex(&d)), Some(d));
        assert_eq!(from_hex("zz"), None);
    }
}
