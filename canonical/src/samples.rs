//! Deterministic sample images: real PNG files, ids 1..=N, sized from a few KB to a few MB.
//! The same id always yields the same bytes, so every run of the sample set is comparable.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Smallest and largest target size of a sample, in bytes (log-uniform in between).
const SMALLEST_SAMPLE_BYTES: f64 = 2.0 * 1024.0;
const LARGEST_SAMPLE_BYTES: f64 = 3.0 * 1024.0 * 1024.0;

/// Encoded bytes per pixel with 6 bits of noise per channel: what the target size is divided by.
const BYTES_PER_PIXEL: f64 = 2.3;

/// Renders sample image `id` as PNG bytes.
pub fn sample_png(id: u64) -> Result<Vec<u8>, png::EncodingError> {
    let mut rng = SmallRng::seed_from_u64(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xf10_7111a);
    let span = LARGEST_SAMPLE_BYTES.ln() - SMALLEST_SAMPLE_BYTES.ln();
    let target = (SMALLEST_SAMPLE_BYTES.ln() + rng.random::<f64>() * span).exp();
    let side = ((target / BYTES_PER_PIXEL).sqrt() as u32).max(8);
    let (width, height) = (side + side / 3, side * 3 / 4);
    let tint = (id.wrapping_mul(37) % 256) as u8;
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            let noise: u8 = rng.random::<u8>() & 0x3f;
            pixels.push(((x * 255 / width) as u8) ^ noise);
            pixels.push(((y * 255 / height) as u8) ^ noise);
            pixels.push(tint ^ noise);
        }
    }
    let mut out = Vec::with_capacity(pixels.len() / 2);
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_valid_pngs() {
        let first = sample_png(123).unwrap();
        assert_eq!(first, sample_png(123).unwrap());
        assert_ne!(first, sample_png(124).unwrap());
        let decoder = png::Decoder::new(std::io::Cursor::new(&first));
        let reader = decoder.read_info().unwrap();
        assert!(reader.info().width >= 8);
    }

    #[test]
    fn sizes_range_from_kilobytes_to_megabytes() {
        let sizes: Vec<usize> = (1..=60).map(|id| sample_png(id).unwrap().len()).collect();
        let smallest = *sizes.iter().min().unwrap();
        let largest = *sizes.iter().max().unwrap();
        assert!(smallest < 64 * 1024, "smallest sample is {smallest} bytes");
        assert!(largest > 1024 * 1024, "largest sample is {largest} bytes");
    }
}
