//! What origin seals cost, per operation: `cargo run --release -p flotilla-wire --example
//! origin_cost`. The edge's cache hit only encodes a larger header (the seal it stored); the
//! signature is made once per canonical read and checked once per miss, replica or client
//! fetch. Printed beside the SHA-256 of a 1 MB body, which every receiver already computes.

use std::hint::black_box;
use std::time::Instant;

use wire::frame::encode_header;
use wire::pki::ClusterCa;
use wire::{
    CacheOutcome, Digest, ImageId, ImageMeta, OriginSeal, OriginSigner, OriginTrust, Response,
    Role, SignedMeta,
};

/// Runs `operation` `rounds` times and returns the mean in microseconds.
fn mean_us(rounds: u32, mut operation: impl FnMut()) -> f64 {
    for _ in 0..rounds / 10 {
        operation();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        operation();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

fn image_header(meta: SignedMeta) -> Response {
    Response::Image {
        meta,
        served_by: "flotilla_node_1".to_string(),
        outcome: CacheOutcome::Hit,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = ClusterCa::generate()?;
    let issued = ca.issue(Role::Canonical)?;
    let signer = OriginSigner::from_pem(&issued.cert_pem, &issued.key_pem)?;
    let trust = OriginTrust::from_ca_pem(ca.cert_pem())?;
    let body = vec![7u8; 1 << 20];
    let meta = ImageMeta {
        id: ImageId(77),
        size: body.len() as u64,
        content_type: "image/png".into(),
        digest: Digest::of(&body),
    };
    let signed = signer.sign(meta.clone())?;
    let unsealed = SignedMeta {
        meta: meta.clone(),
        seal: OriginSeal {
            certificate: Vec::new(),
            signature: Vec::new(),
        },
    };
    let sealed_header = encode_header(&image_header(signed.clone()))?;
    let unsealed_header = encode_header(&image_header(unsealed.clone()))?;
    println!(
        "image reply header: {} bytes with the seal, {} without (the certificate is {} bytes, the signature {})",
        sealed_header.len(),
        unsealed_header.len(),
        signed.seal.certificate.len(),
        signed.seal.signature.len()
    );
    let rounds = 20_000;
    let encode_sealed = mean_us(rounds, || {
        black_box(encode_header(&image_header(black_box(signed.clone()))).ok());
    });
    let encode_unsealed = mean_us(rounds, || {
        black_box(encode_header(&image_header(black_box(unsealed.clone()))).ok());
    });
    println!(
        "cache hit, clone + encode the reply header: {encode_sealed:.2} us with the seal, {encode_unsealed:.2} us without"
    );
    let sign = mean_us(2_000, || {
        black_box(signer.sign(black_box(meta.clone())).ok());
    });
    println!("canonical, sign one image's metadata: {sign:.1} us");
    let rounds_fresh = 2_000;
    let fresh: Vec<SignedMeta> = (0..rounds_fresh + rounds_fresh / 10)
        .map(|size| {
            let mut meta = meta.clone();
            meta.size = u64::from(size);
            signer.sign(meta)
        })
        .collect::<Result<_, _>>()?;
    let mut fresh = fresh.into_iter();
    let verify = mean_us(rounds_fresh, || {
        black_box(fresh.next().map(|signed| trust.verify(signed).is_ok()));
    });
    println!("verify a new seal, certificate already checked (fingerprint cache): {verify:.1} us");
    let again = mean_us(20_000, || {
        black_box(trust.verify(black_box(signed.clone())).ok());
    });
    println!("verify a seal verified before (an image fetched again): {again:.2} us");
    let first = mean_us(200, || {
        let fresh = OriginTrust::from_ca_pem(ca.cert_pem()).ok();
        black_box(fresh.map(|trust| trust.verify(signed.clone()).is_ok()));
    });
    println!("verify a seal, first time (chain check against the CA too): {first:.1} us");
    let digest = mean_us(200, || {
        black_box(Digest::of(black_box(&body)));
    });
    println!(
        "for scale: SHA-256 of a 1 MiB body, which every receiver already computes: {digest:.1} us"
    );
    Ok(())
}
