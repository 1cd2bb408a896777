//! The `media.process` job: take a task, fetch its original into a scratch
//! directory, probe it, convert it, store the result, settle the task.
//!
//! Delivery is at-least-once, so every step is safe to repeat: taking the
//! task is a conditional update that also accepts `processing` (the state a
//! killed worker leaves), the processed object has a fixed key (a repeat
//! replaces it whole), and `processing → processed` happens once.
//!
//! | outcome | task | job |
//! |---|---|---|
//! | output stored | processed | acked |
//! | unreadable input (no video, corrupt) | failed, with the reason | dead letter |
//! | ffmpeg failed or timed out, attempts left | back to uploaded (`last_error`) | retried with backoff |
//! | same, last attempt | failed, "gave up after N attempts: …" | dead letter |
//! | worker shutting down | back to uploaded | retried by another worker |
//! | task deleted or already settled | unchanged | acked |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_bus::{Job, JobError};
use zocalo_objects::ObjectStore;

use crate::domain::{original_key, processed_key};
use crate::ffmpeg::{self, FfmpegError, Pipeline};
use crate::store::TasksStore;

/// Progress is written at most this often per task.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub struct Processor {
    pub store: Arc<dyn TasksStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub pipeline: Pipeline,
    pub scratch: PathBuf,
    /// Fires when the worker stops: ffmpeg is killed and the job retried.
    pub shutdown: CancellationToken,
}

/// How one attempt ended, before it is turned into the job's outcome.
enum Failure {
    /// Retrying cannot help.
    Permanent(String),
    Transient(String),
}

impl From<FfmpegError> for Failure {
    fn from(error: FfmpegError) -> Self {
        match error {
            FfmpegError::Unreadable(reason) => Failure::Permanent(reason),
            other => Failure::Transient(other.to_string()),
        }
    }
}

fn transient(error: impl std::fmt::Display) -> Failure {
    Failure::Transient(error.to_string())
}

impl Processor {
    /// Handle one delivery of the job for `task_id`.
    pub async fn handle(&self, task_id: Uuid, job: &Job) -> Result<(), JobError> {
        let task = match self.store.start_processing(task_id).await {
            Ok(Some(task)) => {
                crate::changes::announce(task_id);
                task
            }
            Ok(None) => {
                tracing::info!(task = %task_id, "task deleted or already settled: nothing to do");
                return Ok(());
            }
            Err(error) => return Err(JobError::retry(error)),
        };
        tracing::info!(task = %task_id, attempt = task.attempts, "processing video");
        let started = Instant::now();
        let workdir = self
            .scratch
            .join(format!("{task_id}-{}", Uuid::new_v4().simple()));
        let mut steps = Steps::default();
        let outcome = self.process_in(task_id, &workdir, &mut steps).await;
        let _ = tokio::fs::remove_dir_all(&workdir).await;
        metrics::histogram!("media_processing_seconds").record(started.elapsed().as_secs_f64());
        steps.log(task_id);
        let settled = self.settle(task_id, job, outcome).await;
        crate::changes::announce(task_id);
        settled
    }

    /// Turn an attempt's outcome into the task's state and the job's.
    async fn settle(
        &self,
        task_id: Uuid,
        job: &Job,
        outcome: Result<u64, Failure>,
    ) -> Result<(), JobError> {
        match outcome {
            Ok(size) => self.finish(task_id, size).await,
            Err(Failure::Permanent(reason)) => {
                metrics::counter!("media_tasks_total", "outcome" => "failed").increment(1);
                self.fail(task_id, &reason).await?;
                Err(JobError::Fatal(reason))
            }
            Err(Failure::Transient(reason)) if job.attempt >= job.max_attempts => {
                metrics::counter!("media_tasks_total", "outcome" => "failed").increment(1);
                let reason = format!("gave up after {} attempts: {reason}", job.attempt);
                self.fail(task_id, &reason).await?;
                Err(JobError::Fatal(reason))
            }
            Err(Failure::Transient(reason)) => {
                metrics::counter!("media_retries_total").increment(1);
                self.store
                    .release(task_id, &reason)
                    .await
                    .map_err(JobError::retry)?;
                Err(JobError::Retry(reason))
            }
        }
    }

    async fn finish(&self, task_id: Uuid, size: u64) -> Result<(), JobError> {
        let settled = self
            .store
            .mark_processed(task_id, size)
            .await
            .map_err(JobError::retry)?;
        if settled {
            metrics::counter!("media_tasks_total", "outcome" => "processed").increment(1);
            tracing::info!(task = %task_id, size, "video processed");
        }
        Ok(())
    }

    async fn fail(&self, task_id: Uuid, reason: &str) -> Result<(), JobError> {
        tracing::warn!(task = %task_id, %reason, "video task failed");
        self.store
            .mark_failed(task_id, reason)
            .await
            .map(|_| ())
            .map_err(JobError::retry)
    }

    /// Fetch, probe, convert, store; the processed size.
    async fn process_in(
        &self,
        task_id: Uuid,
        workdir: &Path,
        steps: &mut Steps,
    ) -> Result<u64, Failure> {
        tokio::fs::create_dir_all(workdir)
            .await
            .map_err(transient)?;
        let input = workdir.join("input");
        let output = workdir.join("output.mp4");
        steps.start(Step::Fetch);
        self.fetch(&original_key(task_id), &input).await?;
        steps.start(Step::Probe);
        let probe = ffmpeg::probe(&self.pipeline, &input).await?;
        steps.start(Step::Transcode);
        let mut reporter = ProgressReporter::new(self.store.clone(), task_id);
        ffmpeg::transcode(
            &self.pipeline,
            &probe,
            &input,
            &output,
            &self.shutdown,
            |p| reporter.report(p),
        )
        .await?;
        steps.start(Step::Store);
        let file = tokio::fs::File::open(&output).await.map_err(transient)?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed();
        let size = self
            .objects
            .put(&processed_key(task_id), body)
            .await
            .map_err(transient)?;
        steps.finish();
        Ok(size)
    }

    /// Copy an object to a local file (ffmpeg seeks in its input).
    async fn fetch(&self, key: &str, path: &Path) -> Result<(), Failure> {
        let object = match self.objects.get(key, None).await {
            Ok(object) => object,
            Err(zocalo_objects::ObjectError::NotFound(_)) => {
                return Err(Failure::Permanent("the uploaded file is missing".into()));
            }
            Err(error) => return Err(transient(error)),
        };
        let mut file = tokio::fs::File::create(path).await.map_err(transient)?;
        let mut body = object.body;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(transient)?)
                .await
                .map_err(transient)?;
        }
        file.flush().await.map_err(transient)
    }
}

/// The steps of one attempt, timed so that what the worker adds to
/// ffmpeg's own time can be seen (`media_step_seconds{step}` and one log
/// line per attempt).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Step {
    /// Copying the original from object storage to the scratch directory.
    Fetch,
    Probe,
    Transcode,
    /// Copying the output into object storage.
    Store,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Fetch => "fetch",
            Step::Probe => "probe",
            Step::Transcode => "transcode",
            Step::Store => "store",
        }
    }
}

#[derive(Default)]
struct Steps {
    current: Option<(Step, Instant)>,
    done: Vec<(Step, Duration)>,
}

impl Steps {
    /// End the step under way (if any) and begin `step`.
    fn start(&mut self, step: Step) {
        self.finish();
        self.current = Some((step, Instant::now()));
    }

    fn finish(&mut self) {
        if let Some((step, since)) = self.current.take() {
            let took = since.elapsed();
            metrics::histogram!("media_step_seconds", "step" => step.name())
                .record(took.as_secs_f64());
            self.done.push((step, took));
        }
    }

    fn millis(&self, step: Step) -> Option<u128> {
        self.done
            .iter()
            .find(|(done, _)| *done == step)
            .map(|(_, took)| took.as_millis())
    }

    /// One line with the milliseconds of each step that ran; a step that
    /// failed half-way is not counted.
    fn log(&self, task_id: Uuid) {
        tracing::info!(
            task = %task_id,
            fetch_ms = self.millis(Step::Fetch),
            probe_ms = self.millis(Step::Probe),
            transcode_ms = self.millis(Step::Transcode),
            store_ms = self.millis(Step::Store),
            "attempt timed"
        );
    }
}

/// Writes progress to the store without holding up ffmpeg: at most every
/// [`PROGRESS_EVERY`], in a task of its own.
struct ProgressReporter {
    store: Arc<dyn TasksStore>,
    task_id: Uuid,
    last_sent: Option<Instant>,
    last_percent: u8,
}

impl ProgressReporter {
    fn new(store: Arc<dyn TasksStore>, task_id: Uuid) -> Self {
        Self {
            store,
            task_id,
            last_sent: None,
            last_percent: 0,
        }
    }

    fn report(&mut self, percent: u8) {
        let due = self
            .last_sent
            .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if percent <= self.last_percent || !due {
            return;
        }
        self.last_sent = Some(Instant::now());
        self.last_percent = percent;
        let (store, task_id) = (self.store.clone(), self.task_id);
        tokio::spawn(async move {
            match store.set_progress(task_id, percent).await {
                Ok(()) => crate::changes::announce(task_id),
                Err(error) => tracing::debug!(task = %task_id, %error, "cannot record progress"),
            }
        });
    }
}
