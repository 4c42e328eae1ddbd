//! Stable content hashes, used to decide whether a completed stage can be reused.

use sha2::{Digest, Sha256};

/// sha256 (hex) of a JSON value in canonical form: object keys sorted (serde_json's default map
/// is ordered), no whitespace. Equal configs hash equally whatever order the file listed them in.
pub fn of_json(value: &serde_json::Value) -> String {
    let canonical = serde_json::to_vec(value).expect("a JSON value always serialises");
    of_bytes(&canonical)
}

pub fn of_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_order_does_not_change_the_hash() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap();
        assert_eq!(super::of_json(&a), super::of_json(&b));
        let c: serde_json::Value = serde_json::from_str(r#"{"b":[2,1],"a":1}"#).unwrap();
        assert_ne!(super::of_json(&a), super::of_json(&c));
    }
}
