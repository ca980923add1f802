//! A real browser for the scenario report: Debian's chromium, headless, loads a page from
//! disk, and says what the page wrote to its console (uncaught errors included) and what it
//! looked like (a screenshot, decoded). chromium is installed with apt-get when it is missing,
//! as the other host tools are ([`chaos::tools::ensure`]), so a clean machine needs nothing
//! beforehand.
//!
//! The browser runs in a process group of its own, and a guard kills the whole group when
//! the load ends, however it ends (chromium starts helper processes that outlive a killed
//! parent otherwise).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::Shell;

/// The browser program, and the Debian package that brings it.
const PROGRAM: &str = "chromium";
const PACKAGE: &str = "chromium";
/// Longest a page load with its screenshot may take (a cold start on a busy machine).
const LOAD_TIMEOUT: Duration = Duration::from_secs(90);
/// How far a screenshot's channel may be from the colour asked for (rounding of blended
/// colours differs by a unit between renderers).
const COLOUR_TOLERANCE: u8 = 2;
/// Size of the browser window, in CSS pixels; the screenshot has this size.
pub const WINDOW: (u32, u32) = (1300, 1100);

/// What the browser saw of a page.
pub struct Loaded {
    /// Every message the page wrote to its console, uncaught exceptions included, as
    /// chromium logged them (`"Uncaught ReferenceError: …", source: file:///… (12)`).
    pub console: Vec<String>,
    pub screenshot: Screenshot,
}

/// A screenshot as RGB pixels, row after row.
pub struct Screenshot {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Screenshot {
    /// Bands of consecutive rows in which at least `min_pixels` pixels have one of `colours`
    /// (each channel within [`COLOUR_TOLERANCE`]), as (first row, rows): how lanes of flat
    /// colour show up in a picture.
    pub fn bands(&self, colours: &[(u8, u8, u8)], min_pixels: usize) -> Vec<(usize, usize)> {
        let near = |a: u8, b: u8| a.abs_diff(b) <= COLOUR_TOLERANCE;
        let matches = |p: &[u8]| {
            colours
                .iter()
                .any(|&(r, g, b)| near(p[0], r) && near(p[1], g) && near(p[2], b))
        };
        let mut bands: Vec<(usize, usize)> = Vec::new();
        let mut inside = false;
        for (y, row) in self.rgb.chunks(self.width * 3).enumerate() {
            let coloured = row.chunks(3).filter(|p| matches(p)).count();
            let lane = coloured >= min_pixels;
            match (lane, inside) {
                (true, false) => bands.push((y, 1)),
                (true, true) => {
                    if let Some(band) = bands.last_mut() {
                        band.1 += 1;
                    }
                }
                _ => {}
            }
            inside = lane;
        }
        bands
    }
}

/// Kills the browser's whole process group when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // The group's id is the browser's pid (`process_group(0)`); its helpers share it.
        let group = self.0.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group and touches no memory.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Loads `page` (a file) in headless chromium with `work` (an empty folder the caller owns)
/// for its profile, log and screenshot, and returns its console messages and screenshot.
pub fn load(sh: &Shell, page: &Path, work: &Path) -> anyhow::Result<Loaded> {
    chaos::tools::ensure(sh, PROGRAM, PACKAGE)?;
    let page = page
        .canonicalize()
        .with_context(|| format!("finding {}", page.display()))?;
    let screenshot = work.join("screenshot.png");
    let log = work.join("chromium.log");
    let mut command = Command::new(PROGRAM);
    command
        // Root (CI) cannot use chromium's sandbox; the page is our own file.
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--no-first-run", "--hide-scrollbars", "--mute-audio"])
        // Colours in the screenshot exactly as the page wrote them.
        .arg("--force-color-profile=srgb")
        // Console messages and uncaught exceptions go to stderr as `INFO:CONSOLE` lines.
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!(
            "--user-data-dir={}",
            work.join("profile").display()
        ))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.join("chromium.out")).context("creating chromium.out")?)
        .stderr(std::fs::File::create(&log).context("creating chromium.log")?);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut browser = Group(command.spawn().context("starting chromium")?);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.0.try_wait().context("waiting for chromium")? {
            break status;
        }
        anyhow::ensure!(
            started.elapsed() < LOAD_TIMEOUT,
            "chromium did not load {} within {} s; its log is {}",
            page.display(),
            LOAD_TIMEOUT.as_secs(),
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(browser);
    let said = std::fs::read_to_string(&log).context("reading chromium.log")?;
    anyhow::ensure!(
        status.success() && screenshot.is_file(),
        "chromium failed on {} ({status}); it said:\n{}",
        page.display(),
        said.trim()
    );
    let console = said
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(|line| line.split_once("] ").map_or(line, |(_, m)| m).to_string())
        .collect();
    Ok(Loaded {
        console,
        screenshot: decode(&screenshot)?,
    })
}

/// Reads a PNG file into RGB pixels.
fn decode(path: &Path) -> anyhow::Result<Screenshot> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut pixels = vec![
        0;
        reader
            .output_buffer_size()
            .context("a screenshot too large")?
    ];
    let frame = reader
        .next_frame(&mut pixels)
        .with_context(|| format!("decoding {}", path.display()))?;
    pixels.truncate(frame.buffer_size());
    let rgb = match (frame.color_type, frame.bit_depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => pixels,
        (png::ColorType::Rgba, png::BitDepth::Eight) => {
            pixels.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
        }
        (colour, depth) => anyhow::bail!(
            "{}: a {colour:?} PNG of depth {depth:?}; chromium writes 8-bit RGB(A)",
            path.display()
        ),
    };
    Ok(Screenshot {
        width: frame.width as usize,
        height: frame.height as usize,
        rgb,
    })
}
