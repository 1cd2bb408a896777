//! The system `ffprobe` and `ffmpeg` as child processes: no shell, a fixed
//! argument list whose only variable parts are paths and numbers we chose
//! (never anything from the upload), a time limit, and a kill on timeout or
//! cancellation. Progress comes from `-progress pipe:1`.
//!
//! If the worker process dies (even by SIGKILL), ffmpeg must not keep
//! encoding as an orphan. Its next progress write would hit a closed pipe
//! and end it by SIGPIPE, but a slow encoder can go many seconds without
//! writing; so ffmpeg is started through util-linux `setpriv --pdeathsig
//! KILL` (when present), which makes the kernel kill it the moment its
//! parent dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// The longest part of the input that is kept.
pub const MAX_CLIP_SECS: f64 = 20.0;
/// Length of each logo card (one at the start, one at the end).
pub const CARD_SECS: f64 = 2.0;
/// Bytes of ffmpeg's error output kept for a failure reason.
const STDERR_TAIL: usize = 2048;

/// How outputs are made.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// `setpriv`, to start ffmpeg with a parent-death signal; `None` runs
    /// ffmpeg directly.
    pub setpriv: Option<PathBuf>,
    pub logo: PathBuf,
    /// Output width; the height is `width * 9 / 16` (both even).
    pub width: u32,
    pub fps: u32,
    /// x264 preset (`ultrafast` … `veryslow`): speed against size.
    pub preset: String,
    pub crf: u8,
    /// The most one ffmpeg run may take.
    pub timeout: Duration,
}

impl Pipeline {
    pub fn height(&self) -> u32 {
        even(self.width * 9 / 16)
    }

    fn width_even(&self) -> u32 {
        even(self.width)
    }
}

fn even(n: u32) -> u32 {
    (n / 2 * 2).max(2)
}

/// Why a run did not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    /// The input is not a video ffmpeg can read: retrying cannot help.
    #[error("{0}")]
    Unreadable(String),
    #[error("ffmpeg took longer than {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("stopped: the worker is shutting down")]
    Cancelled,
    /// ffmpeg failed on a readable input, or could not be started.
    #[error("{0}")]
    Failed(String),
}

/// What ffprobe says of an input.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    pub has_audio: bool,
    /// Seconds, when the container says.
    pub duration: Option<f64>,
}

impl Probe {
    /// Seconds of the input that end up in the output.
    pub fn kept_secs(&self) -> f64 {
        self.duration
            .filter(|d| d.is_finite() && *d > 0.0)
            .map_or(MAX_CLIP_SECS, |d| d.min(MAX_CLIP_SECS))
    }
}

#[derive(Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_type: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
}

/// Read the streams of `input`; an input without a video stream, or one
/// ffprobe cannot read, is [`FfmpegError::Unreadable`].
pub async fn probe(pipeline: &Pipeline, input: &Path) -> Result<Probe, FfmpegError> {
    let mut command = Command::new(&pipeline.ffprobe);
    command
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(input);
    let output = run_to_end(command, Duration::from_secs(60)).await?;
    if !output.status.success() {
        return Err(FfmpegError::Unreadable(format!(
            "not a readable video: {}",
            last_line(&output.stderr)
        )));
    }
    let parsed: ProbeOutput = serde_json::from_slice(&output.stdout)
        .map_err(|e| FfmpegError::Unreadable(format!("not a readable video: {e}")))?;
    let video = parsed
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video") && s.width.unwrap_or(0) > 0)
        .ok_or_else(|| FfmpegError::Unreadable("the file has no video stream".into()))?;
    let seconds = |text: &Option<String>| text.as_deref().and_then(|d| d.parse::<f64>().ok());
    Ok(Probe {
        width: video.width.unwrap_or(0),
        height: video.height.unwrap_or(0),
        has_audio: parsed
            .streams
            .iter()
            .any(|s| s.codec_type.as_deref() == Some("audio")),
        duration: parsed
            .format
            .as_ref()
            .and_then(|f| seconds(&f.duration))
            .or_else(|| seconds(&video.duration)),
    })
}

/// Run `command` to its end within `limit`, collecting its output.
async fn run_to_end(
    mut command: Command,
    limit: Duration,
) -> Result<std::process::Output, FfmpegError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| {
        FfmpegError::Failed(format!(
            "cannot start {:?}: {e}",
            command.as_std().get_program()
        ))
    })?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| FfmpegError::Failed(e.to_string())),
        // Dropping the future drops the child, which kills it.
        Err(_) => Err(FfmpegError::TimedOut(limit)),
    }
}

fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no detail")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// The whole ffmpeg command line after the program name: logo card,
/// the input scaled and padded to 16:9 (no distortion) and cut to 20 s,
/// logo card; H.264/AAC in MP4.
pub fn arguments(pipeline: &Pipeline, probe: &Probe, input: &Path, output: &Path) -> Vec<String> {
    let (w, h, fps) = (pipeline.width_even(), pipeline.height(), pipeline.fps);
    let kept = probe.kept_secs();
    let frame = format!(
        "scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,fps={fps},format=yuv420p"
    );
    let card = format!(
        "scale={}:{}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,fps={fps},format=yuv420p,trim=duration={CARD_SECS},split=2[open][close]",
        even(w / 2),
        even(h / 2)
    );
    let silence = |secs: f64| format!("anullsrc=r=48000:cl=stereo,atrim=duration={secs:.3}");
    let main_audio = if probe.has_audio {
        // Padded then cut: the soundtrack lasts exactly as long as the picture.
        format!(
            "[0:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo,apad,atrim=duration={kept:.3}[main_a]"
        )
    } else {
        format!("{}[main_a]", silence(kept))
    };
    let graph = [
        format!("[0:v]trim=duration={kept:.3},setpts=PTS-STARTPTS,{frame}[main_v]"),
        format!("[1:v]{card}"),
        main_audio,
        format!("{},asplit=2[open_a][close_a]", silence(CARD_SECS)),
        "[open][open_a][main_v][main_a][close][close_a]concat=n=3:v=1:a=1[v][a]".to_owned(),
    ]
    .join(";");
    let mut args: Vec<String> = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-y",
        "-progress",
        "pipe:1",
        "-t",
    ]
    .map(String::from)
    .into();
    args.push(format!("{MAX_CLIP_SECS}"));
    args.extend(["-i".into(), path_arg(input)]);
    args.extend(
        ["-loop", "1", "-framerate"]
            .map(String::from)
            .into_iter()
            .chain([
                fps.to_string(),
                "-t".into(),
                format!("{CARD_SECS}"),
                "-i".into(),
                path_arg(&pipeline.logo),
            ]),
    );
    args.extend(["-filter_complex".into(), graph]);
    args.extend(
        [
            "-map",
            "[v]",
            "-map",
            "[a]",
            "-c:v",
            "libx264",
            "-preset",
            &pipeline.preset,
            "-crf",
            &pipeline.crf.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ]
        .map(String::from),
    );
    args.push(path_arg(output));
    args
}

/// A path as an argument that ffmpeg cannot mistake for an option or a
/// protocol: always absolute (our scratch paths are), prefixed `file:`.
fn path_arg(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// Seconds of output a finished run produces.
pub fn output_secs(probe: &Probe) -> f64 {
    probe.kept_secs() + 2.0 * CARD_SECS
}

/// Transcode `input` into `output`, calling `progress` with the percent
/// done (0–99) as ffmpeg reports it. Killed after `pipeline.timeout` or
/// when `cancel` fires.
pub async fn transcode(
    pipeline: &Pipeline,
    probe: &Probe,
    input: &Path,
    output: &Path,
    cancel: &CancellationToken,
    mut progress: impl FnMut(u8),
) -> Result<(), FfmpegError> {
    let args = arguments(pipeline, probe, input, output);
    // The exact command, so that it can be run by hand (bench/media.sh).
    tracing::debug!(ffmpeg = %pipeline.ffmpeg.display(), ?args, "running ffmpeg");
    let mut command = match &pipeline.setpriv {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command
                .args(["--pdeathsig", "KILL", "--"])
                .arg(&pipeline.ffmpeg);
            command
        }
        None => Command::new(&pipeline.ffmpeg),
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| FfmpegError::Failed(format!("cannot start ffmpeg: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| FfmpegError::Failed("no stdout".into()))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| FfmpegError::Failed("no stderr".into()))?;
    let errors = tokio::spawn(tail(stderr));
    let total_us = output_secs(probe) * 1_000_000.0;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = tokio::time::sleep(pipeline.timeout);
    tokio::pin!(deadline);
    let mut stdout_open = true;
    let status = loop {
        tokio::select! {
            line = lines.next_line(), if stdout_open => match line {
                Ok(Some(line)) => {
                    if let Some(percent) = percent_done(&line, total_us) {
                        progress(percent);
                    }
                }
                _ => stdout_open = false,
            },
            status = child.wait() => break status.map_err(|e| FfmpegError::Failed(e.to_string()))?,
            () = &mut deadline => {
                let _ = child.kill().await;
                return Err(FfmpegError::TimedOut(pipeline.timeout));
            }
            () = cancel.cancelled() => {
                let _ = child.kill().await;
                return Err(FfmpegError::Cancelled);
            }
        }
    };
    let stderr = errors.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(FfmpegError::Failed(format!(
            "ffmpeg failed ({status}): {}",
            last_line(&stderr)
        )))
    }
}

/// The last bytes a stream writes (the end of ffmpeg's error output is
/// where the reason is).
async fn tail(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 1024];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..read]);
        if kept.len() > STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    kept
}

/// Percent done from one `-progress` line (`out_time_us=…`), below 100:
/// 100 is for when the output is stored.
fn percent_done(line: &str, total_us: f64) -> Option<u8> {
    let value = line
        .strip_prefix("out_time_us=")?
        .trim()
        .parse::<f64>()
        .ok()?;
    if total_us <= 0.0 || value < 0.0 {
        return None;
    }
    Some((value / total_us * 100.0).clamp(0.0, 99.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        Pipeline {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            setpriv: None,
            logo: "/srv/logo.png".into(),
            width: 1280,
            fps: 30,
            preset: "veryfast".into(),
            crf: 23,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn progress_lines_become_percentages() {
        assert_eq!(percent_done("out_time_us=12000000", 24_000_000.0), Some(50));
        assert_eq!(percent_done("out_time_us=30000000", 24_000_000.0), Some(99));
        assert_eq!(percent_done("out_time_us=N/A", 24_000_000.0), None);
        assert_eq!(percent_done("frame=12", 24_000_000.0), None);
    }

    #[test]
    fn clips_are_cut_to_twenty_seconds_plus_cards() {
        let long = Probe {
            width: 640,
            height: 480,
            has_audio: true,
            duration: Some(95.0),
        };
        let short = Probe {
            duration: Some(3.5),
            ..long.clone()
        };
        let unknown = Probe {
            duration: None,
            ..long.clone()
        };
        assert_eq!(output_secs(&long), 24.0);
        assert_eq!(output_secs(&short), 7.5);
        assert_eq!(output_secs(&unknown), 24.0);
    }

    #[test]
    fn arguments_are_fixed_and_paths_cannot_be_options() {
        let probe = Probe {
            width: 640,
            height: 480,
            has_audio: false,
            duration: Some(5.0),
        };
        let args = arguments(
            &pipeline(),
            &probe,
            Path::new("/tmp/x/-i"),
            Path::new("/tmp/x/out.mp4"),
        );
        assert!(args.contains(&"file:/tmp/x/-i".to_owned()));
        assert_eq!(args.last().unwrap(), "file:/tmp/x/out.mp4");
        let graph = &args[args.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        assert!(graph.contains("pad=1280:720"), "{graph}");
        assert!(
            graph.contains("anullsrc"),
            "silence stands in for a missing soundtrack"
        );
        assert_eq!(pipeline().height(), 720);
        assert_eq!(
            Pipeline {
                width: 330,
                ..pipeline()
            }
            .height(),
            184
        );
    }
}
