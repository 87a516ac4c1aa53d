//! Every algorithm family through the real gateway, with kid selection.

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};

fn config() -> String {
    let key = |alg: &str, kid: &str, file: &str| {
        format!(
            "[[auth.keys]]\nalg = \"{alg}\"\nkid = \"{kid}\"\npublic_key_file = \"{}\"\n",
            data(file).display()
        )
    };
    let keys = [
        key("RS256", "rs", "rsa.pub.pem"),
        key("PS384", "ps", "rsa.pub.pem"),
        key("ES256", "es256", "ec256.pub.pem"),
        key("ES384", "es384", "ec384.pub.pem"),
        key("EdDSA", "ed", "ed25519.pub.pem"),
    ]
    .concat();
    base_config("").replace("[origins]", &format!("{keys}[origins]"))
}

fn private(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = std::fs::read(data(file)).expect("pem");
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("private key")
}

#[tokio::test]
async fn each_family_and_kid() {
    let gw = Gateway::start(&config());
    for (alg, kid, file) in [
        (Algorithm::RS256, "rs", "rsa.pem"),
        (Algorithm::PS384, "ps", "rsa.pem"),
        (Algorithm::ES256, "es256", "ec256.pem"),
        (Algorithm::ES384, "es384", "ec384.pem"),
        (Algorithm::EdDSA, "ed", "ed25519.pem"),
    ] {
        let t = sign(alg, &private(alg, file), Some(kid), &claims(kid, 60));
        let (mut ws, _) = bearer(&gw.url(), &t).await.open();
        assert_eq!(echo(&mut ws, kid).await, kid);
    }
    // The HS256 key (no kid) still works for tokens without a kid.
    bearer(&gw.url(), &token("hs")).await.open();
    // RSA key pinned to RS256: a PS256 token under its kid is refused.
    let ps = sign(
        Algorithm::PS256,
        &private(Algorithm::PS256, "rsa.pem"),
        Some("rs"),
        &claims("x", 60),
    );
    bearer(&gw.url(), &ps)
        .await
        .refused(401, "algorithm_not_allowed");
    // Key confusion: HS256 keyed with the RSA public key, claiming kid "rs".
    let pubpem = std::fs::read(data("rsa.pub.pem")).expect("pem");
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&pubpem),
        Some("rs"),
        &claims("x", 60),
    );
    bearer(&gw.url(), &forged)
        .await
        .refused(401, "algorithm_not_allowed");
    // An EdDSA token under the ES256 key's kid.
    let t = sign(
        Algorithm::EdDSA,
        &private(Algorithm::EdDSA, "ed25519.pem"),
        Some("es256"),
        &claims("x", 60),
    );
    bearer(&gw.url(), &t)
        .await
        .refused(401, "algorithm_not_allowed");
}
