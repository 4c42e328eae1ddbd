use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use crate::cancel::CancelToken;
use crate::device::DeviceSpec;
use crate::error::StageError;
use crate::message::{Artifact, Message};
use crate::progress::Progress;
use crate::work::Work;

/// How often a port blocked on a channel looks at the cancellation flag.
const CANCEL_POLL: Duration = Duration::from_millis(25);

/// Everything a running stage gets from the executor.
#[derive(Debug)]
pub struct StageContext<'a> {
    /// The stage's id in the pipeline file (its table name).
    pub stage_id: &'a str,
    /// The pipeline's run directory.
    pub run_dir: &'a Path,
    /// This stage's own directory, `<run_dir>/<stage_id>`, created before the stage starts.
    pub stage_dir: PathBuf,
    /// The pipeline seed; stages derive their random streams from it.
    pub seed: u64,
    pub cancel: CancelToken,
    pub progress: Progress,
    /// Which share of the stage's work this run does: the whole unless the pipeline gives the
    /// stage `parts = N` (only for kinds that declare [`crate::Stage::PARTS`]).
    pub work: Work,
    /// The device the stage computes on (`device` in the stage's table or `[pipeline]`,
    /// `MONOSCOPE_DEVICE`, `--device`); checked to be present before the run starts.
    pub device: DeviceSpec,
    inputs: BTreeMap<String, InputPort>,
    outputs: BTreeMap<String, OutputPort>,
    emitted: Vec<(String, Artifact)>,
}

impl<'a> StageContext<'a> {
    /// Used by the executor (and by tests that drive a stage by hand).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stage_id: &'a str,
        run_dir: &'a Path,
        stage_dir: PathBuf,
        seed: u64,
        cancel: CancelToken,
        progress: Progress,
        inputs: Vec<InputPort>,
        outputs: Vec<OutputPort>,
    ) -> Self {
        StageContext {
            stage_id,
            run_dir,
            stage_dir,
            seed,
            cancel,
            progress,
            work: Work::Whole,
            device: DeviceSpec::Cpu,
            inputs: inputs.into_iter().map(|p| (p.name.clone(), p)).collect(),
            outputs: outputs.into_iter().map(|p| (p.name.clone(), p)).collect(),
            emitted: Vec::new(),
        }
    }

    /// When the stage had something from every input port it has read: its work starts then
    /// (the first batch of a stream, or an upstream stage's finished artifact). `None` when
    /// it read no input.
    pub fn inputs_ready_at(&self) -> Option<Instant> {
        self.inputs
            .values()
            .filter_map(InputPort::first_delivery)
            .max()
    }

    /// Whether an (optional) input port is connected in this pipeline.
    pub fn has_input(&self, port: &str) -> bool {
        self.inputs.contains_key(port)
    }

    /// The artifact on an optional input port: `None` when the port is not connected, an
    /// error when it is connected but its upstream stage produced nothing.
    pub fn optional_artifact(&mut self, port: &str) -> Result<Option<Artifact>, StageError> {
        if self.has_input(port) {
            self.recv_artifact(port).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Takes an input port out of the context, so that a reader can own it while the stage
    /// goes on using the context (progress, cancellation). `None` when it is not connected.
    pub fn take_input(&mut self, port: &str) -> Option<InputPort> {
        self.inputs.remove(port)
    }

    /// Whether any stage consumes this output port in this pipeline.
    pub fn has_consumers(&self, port: &str) -> bool {
        self.outputs
            .get(port)
            .is_some_and(|p| !p.senders.is_empty())
    }

    /// The input port of that name.
    pub fn input(&mut self, port: &str) -> Result<&mut InputPort, StageError> {
        self.inputs.get_mut(port).ok_or_else(|| StageError::Port {
            port: port.to_string(),
            message: "not connected".to_string(),
        })
    }

    /// Receives the single artifact an artifact input carries.
    pub fn recv_artifact(&mut self, port: &str) -> Result<Artifact, StageError> {
        match self.input(port)?.recv()? {
            Some(Message::Artifact(artifact)) => Ok(artifact),
            Some(Message::Activations(_)) => Err(StageError::Port {
                port: port.to_string(),
                message: "expected an artifact, got a batch of activations".to_string(),
            }),
            None => Err(StageError::Port {
                port: port.to_string(),
                message: "the upstream stage ended without producing an artifact".to_string(),
            }),
        }
    }

    /// Sends a stream item on an output port, waiting while the consumers are full.
    pub fn send(&mut self, port: &str, message: Message) -> Result<(), StageError> {
        if let Message::Artifact(artifact) = &message {
            self.emitted.push((port.to_string(), artifact.clone()));
        }
        let output = self.outputs.get(port).ok_or_else(|| StageError::Port {
            port: port.to_string(),
            message: "no such output".to_string(),
        })?;
        output.send(message)
    }

    /// Announces a finished artifact on an output port. Write it (atomically) first.
    pub fn emit_artifact(&mut self, port: &str, artifact: Artifact) -> Result<(), StageError> {
        self.send(port, Message::Artifact(artifact))
    }

    /// The artifacts this stage announced, by port; the executor records them so that a later
    /// run that skips this stage can hand them on again.
    pub fn emitted(&self) -> &[(String, Artifact)] {
        &self.emitted
    }

    /// Closes every port, so consumers see the end of their streams.
    pub fn close_ports(&mut self) {
        self.inputs.clear();
        self.outputs.clear();
    }
}

/// The receiving end of one input port.
#[derive(Debug)]
pub struct InputPort {
    name: String,
    receiver: Receiver<Message>,
    cancel: CancelToken,
    /// When the first message (or the end of the stream) arrived.
    first_delivery: Option<Instant>,
}

impl InputPort {
    pub fn new(name: impl Into<String>, receiver: Receiver<Message>, cancel: CancelToken) -> Self {
        InputPort {
            name: name.into(),
            receiver,
            cancel,
            first_delivery: None,
        }
    }

    /// When this port first delivered something, if it has been read.
    pub fn first_delivery(&self) -> Option<Instant> {
        self.first_delivery
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next item; `Ok(None)` once the upstream stage has finished and the channel is empty.
    pub fn recv(&mut self) -> Result<Option<Message>, StageError> {
        loop {
            self.cancel.check()?;
            match self.receiver.recv_timeout(CANCEL_POLL) {
                Ok(message) => {
                    self.first_delivery.get_or_insert_with(Instant::now);
                    return Ok(Some(message));
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    // An upstream that stopped because the run was cancelled also disconnects:
                    // report the cancellation, never a clean end of a truncated stream.
                    self.cancel.check()?;
                    self.first_delivery.get_or_insert_with(Instant::now);
                    return Ok(None);
                }
            }
        }
    }
}

/// The sending end of one output port, fanned out to every connected consumer.
#[derive(Debug)]
pub struct OutputPort {
    name: String,
    senders: Vec<Sender<Message>>,
    cancel: CancelToken,
}

impl OutputPort {
    pub fn new(
        name: impl Into<String>,
        senders: Vec<Sender<Message>>,
        cancel: CancelToken,
    ) -> Self {
        OutputPort {
            name: name.into(),
            senders,
            cancel,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends to every consumer, blocking while a consumer's channel is full (backpressure).
    pub fn send(&self, message: Message) -> Result<(), StageError> {
        for sender in &self.senders {
            let mut pending = message.clone();
            loop {
                self.cancel.check()?;
                match sender.send_timeout(pending, CANCEL_POLL) {
                    Ok(()) => break,
                    Err(SendTimeoutError::Timeout(back)) => pending = back,
                    // The consumer finished without reading everything: its choice, not an error.
                    Err(SendTimeoutError::Disconnected(_)) => break,
                }
            }
        }
        Ok(())
    }
}
