//! Voice prompts: recorded announcements and music on hold that the box plays to a
//! caller who is not bridged to anyone (a caller waiting in a queue).
//!
//! - **Files.** An installer (or HQ's provisioning) drops WAV files into the data
//!   directory's `prompts/` ([`PROMPTS_DIR`]); a prompt's name is its file stem
//!   (`prompts/sales-moh.wav` is `sales-moh`), which queues name in their
//!   `music_on_hold` setting. `branchd` reads them at start ([`PromptLibrary::load_dir`]).
//!   Format: RIFF/WAVE, PCM, mono, 8000 Hz, 16-bit (what `sox in.mp3 -r 8000 -c 1 -b 16
//!   out.wav` makes), at most [`MAX_PROMPT_SECS`] s and [`MAX_PROMPTS`] files. A file
//!   that is not that is refused with an error naming the file and what is wrong (logged
//!   at start; the rest still load), so a queue naming it falls back to the tone chime.
//! - **What to play** is a pure description ([`Playback`]): prompts played once in
//!   order, then a sound looped until stopped (a prompt, or a tone of the country's tone
//!   plan rendered as audio). Call control emits it ([`crate::call::Output::Play`]); the
//!   daemon resolves it against the library into a [`Player`], and the media engine
//!   pulls one 20 ms frame from the player on its frame clock and sends it to the analog
//!   port or, as RTP, to the SIP leg.
//!
//! WAV decoding uses `hound` (header parsing, sample formats). Resampling and format
//! conversion are deliberately not done on the box: a prompt in another format is
//! refused with the `sox` line above rather than played at the wrong speed.
//!
//! - **The built-in set.** The image installs English prompts in
//!   `/usr/share/branchline/prompts` (`paths.system_prompts`; in the repository
//!   `image/rootfs/usr/share/branchline/prompts`, made from `image/prompts/prompts.txt`
//!   by `image/prompts/generate.sh` with espeak-ng and sox): the queue announcement's
//!   words (`queue-position`, `queue-wait`, `num-0` ... `num-90`, `minute(s)`), the
//!   survey's (`survey`, `survey-thanks`), voicemail's (`vm-greeting`, ...) and a few
//!   more. `branchd` loads them first and the data directory's `prompts/` after, so an
//!   installer's file of the same name replaces a built-in one ([`PromptLibrary::load_dirs`]).
//!
//! Limits: the built-in set is synthetic speech in US English only; G.711 or 16 kHz
//! WAVs are refused, not converted; prompts are read at start only (a new file needs a
//! restart).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use branchline_board::dsp::ToneGenerator;

use crate::tones::{Country, Tone};

/// The prompts directory under the data directory.
pub const PROMPTS_DIR: &str = "prompts";
/// Sample rate of prompts (Hz).
pub const PROMPT_RATE: u32 = 8000;
/// Longest prompt accepted (seconds): ten minutes of music on hold.
pub const MAX_PROMPT_SECS: u32 = 600;
/// Most prompt files read from the directory.
pub const MAX_PROMPTS: usize = 256;
/// Largest file read (bytes): a ten-minute prompt plus headers.
const MAX_FILE_BYTES: u64 = (MAX_PROMPT_SECS as u64) * (PROMPT_RATE as u64) * 2 + 64 * 1024;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;

/// Why a prompt file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The file or directory could not be read.
    #[error("prompt {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a WAV file hound can read.
    #[error("prompt {path}: not a readable WAV file: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// hound's error.
        #[source]
        source: hound::Error,
    },
    /// A WAV file in another format than PCM, mono, 8000 Hz, 16-bit.
    #[error(
        "prompt {path}: {what}; prompts must be PCM mono 8000 Hz 16-bit \
         (sox in.wav -r 8000 -c 1 -b 16 out.wav)"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// Longer than [`MAX_PROMPT_SECS`] (or a file too large to be one).
    #[error("prompt {path}: longer than {MAX_PROMPT_SECS} s")]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// No audio at all.
    #[error("prompt {path}: has no audio")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file name is not a usable prompt name.
    #[error("prompt {path}: the name must be 1-64 of a-z, 0-9, '-', '_' with a .wav suffix")]
    BadName {
        /// The file.
        path: PathBuf,
    },
    /// More than [`MAX_PROMPTS`] files.
    #[error("prompts in {dir}: more than {MAX_PROMPTS} files; the rest are not read")]
    TooMany {
        /// The directory.
        dir: PathBuf,
    },
}

/// Is `name` a valid prompt name (1-64 of `a-z 0-9 - _`)?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// One decoded prompt: 8 kHz 16-bit mono samples, shared between players.
#[derive(Debug, Clone)]
pub struct Prompt {
    name: String,
    samples: Arc<[i16]>,
}

impl Prompt {
    /// Decodes a WAV file's bytes (`path` names it in errors; its stem is not used).
    pub fn decode(name: &str, path: &Path, bytes: &[u8]) -> Result<Prompt, PromptError> {
        let reader =
            hound::WavReader::new(Cursor::new(bytes)).map_err(|source| PromptError::Wav {
                path: path.to_owned(),
                source,
            })?;
        let spec = reader.spec();
        let mut wrong = Vec::new();
        if spec.sample_format != hound::SampleFormat::Int {
            wrong.push("floating-point samples".to_owned());
        }
        if spec.channels != 1 {
            wrong.push(format!("{} channels", spec.channels));
        }
        if spec.sample_rate != PROMPT_RATE {
            wrong.push(format!("{} Hz", spec.sample_rate));
        }
        if spec.bits_per_sample != 16 {
            wrong.push(format!("{}-bit", spec.bits_per_sample));
        }
        if !wrong.is_empty() {
            return Err(PromptError::Format {
                path: path.to_owned(),
                what: wrong.join(", "),
            });
        }
        if reader.duration() > MAX_PROMPT_SECS * PROMPT_RATE {
            return Err(PromptError::TooLong {
                path: path.to_owned(),
            });
        }
        let samples = reader
            .into_samples::<i16>()
            .collect::<Result<Vec<i16>, _>>()
            .map_err(|source| PromptError::Wav {
                path: path.to_owned(),
                source,
            })?;
        if samples.is_empty() {
            return Err(PromptError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Prompt {
            name: name.to_owned(),
            samples: samples.into(),
        })
    }

    /// A prompt from samples (tests, generated audio).
    pub fn from_samples(name: &str, samples: Vec<i16>) -> Prompt {
        Prompt {
            name: name.to_owned(),
            samples: samples.into(),
        }
    }

    /// The prompt's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long it plays.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.samples.len() as u64 * 1_000_000 / u64::from(PROMPT_RATE))
    }

    /// The samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
}

/// The prompts `branchd` knows, by name.
#[derive(Debug, Clone, Default)]
pub struct PromptLibrary {
    prompts: BTreeMap<String, Prompt>,
}

impl PromptLibrary {
    /// Reads every `*.wav` in `dir` (not recursively; other files are ignored). A
    /// missing directory is an empty library. Files that cannot be used are returned as
    /// errors beside the library of those that can.
    pub fn load_dir(dir: &Path) -> (PromptLibrary, Vec<PromptError>) {
        let mut lib = PromptLibrary::default();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (lib, errors),
            Err(source) => {
                errors.push(PromptError::Io {
                    path: dir.to_owned(),
                    source,
                });
                return (lib, errors);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")))
            .collect();
        paths.sort();
        if paths.len() > MAX_PROMPTS {
            errors.push(PromptError::TooMany {
                dir: dir.to_owned(),
            });
            paths.truncate(MAX_PROMPTS);
        }
        for path in paths {
            match Self::load_file(&path) {
                Ok(p) => {
                    lib.prompts.insert(p.name.clone(), p);
                }
                Err(e) => errors.push(e),
            }
        }
        (lib, errors)
    }

    /// [`PromptLibrary::load_dir`] of each of `dirs` in turn: a prompt of a later
    /// directory replaces the one of the same name from an earlier one (the installer's
    /// own prompts in the data directory over the built-in set).
    pub fn load_dirs(dirs: &[&Path]) -> (PromptLibrary, Vec<PromptError>) {
        let mut lib = PromptLibrary::default();
        let mut errors = Vec::new();
        for dir in dirs {
            let (more, errs) = Self::load_dir(dir);
            lib.prompts.extend(more.prompts);
            errors.extend(errs);
        }
        (lib, errors)
    }

    fn load_file(path: &Path) -> Result<Prompt, PromptError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| valid_name(s))
            .ok_or_else(|| PromptError::BadName {
                path: path.to_owned(),
            })?;
        let io = |source| PromptError::Io {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(PromptError::TooLong {
                path: path.to_owned(),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Prompt::decode(name, path, &bytes)
    }

    /// Adds (or replaces) a prompt.
    pub fn insert(&mut self, prompt: Prompt) {
        self.prompts.insert(prompt.name.clone(), prompt);
    }

    /// The prompt called `name`.
    pub fn get(&self, name: &str) -> Option<&Prompt> {
        self.prompts.get(name)
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// No prompts at all.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Every prompt's name and length (what call control needs to decide and time).
    pub fn durations(&self) -> BTreeMap<String, Duration> {
        self.prompts
            .iter()
            .map(|(n, p)| (n.clone(), p.duration()))
            .collect()
    }

    /// Turns a description into a player: prompts by name (an unknown name is skipped
    /// and logged), tones by `country`'s plan.
    pub fn player(&self, playback: &Playback, country: Country) -> Player {
        let prompt = |name: &str| {
            let p = self.get(name).cloned();
            if p.is_none() {
                tracing::warn!(prompt = name, "prompt not found: skipped");
            }
            p
        };
        let once = playback
            .once
            .iter()
            .filter_map(|n| prompt(n))
            .map(Source::prompt)
            .collect();
        let then = match &playback.then {
            None => None,
            Some(Sound::Prompt(n)) => prompt(n).map(Source::prompt),
            Some(Sound::Tone(t)) => Some(Source::Tone(ToneGenerator::new(country.tone(*t)))),
        };
        Player { once, then }
    }
}

/// A sound looped after a playback's prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sound {
    /// A prompt by name.
    Prompt(String),
    /// A tone of the country's plan, rendered as audio.
    Tone(Tone),
}

/// What to play to one end: `once` in order, then `then` looped until stopped (or
/// silence when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Playback {
    /// Prompts played once each, in order.
    pub once: Vec<String>,
    /// Looped after them.
    pub then: Option<Sound>,
}

impl Playback {
    /// Only a looped sound.
    pub fn looped(sound: Sound) -> Playback {
        Playback {
            once: Vec::new(),
            then: Some(sound),
        }
    }
}

/// One source of audio in a [`Player`].
#[derive(Debug)]
enum Source {
    Prompt {
        prompt: Prompt,
        at: usize,
    },
    Tone(ToneGenerator),
    /// The echo test's delay line, fed by the media engine's capture of the same end.
    Echo(EchoLine),
}

impl Source {
    fn prompt(prompt: Prompt) -> Source {
        Source::Prompt { prompt, at: 0 }
    }

    /// Fills as much of `out` as this source has; returns how many samples it wrote
    /// (fewer than asked: the source ended).
    fn fill(&mut self, out: &mut [i16]) -> usize {
        match self {
            Source::Prompt { prompt, at } => {
                let rest = &prompt.samples[*at..];
                let n = rest.len().min(out.len());
                out[..n].copy_from_slice(&rest[..n]);
                *at += n;
                n
            }
            Source::Tone(g) => {
                g.fill(out);
                out.len()
            }
            Source::Echo(line) => {
                line.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .fill(out);
                out.len()
            }
        }
    }

    fn rewind(&mut self) {
        if let Source::Prompt { at, .. } = self {
            *at = 0;
        }
    }
}

/// Plays a resolved [`Playback`] frame by frame (the media engine's side).
#[derive(Debug)]
pub struct Player {
    once: VecDeque<Source>,
    then: Option<Source>,
}

/// A delay line shared by an echo test's capture (writer) and its [`Player::echo`]
/// (reader), both on the media engine's task.
pub type EchoLine = std::sync::Arc<std::sync::Mutex<branchline_media::echo::DelayLine>>;

impl Player {
    /// A player that plays what `line` gives back, until stopped (the echo test).
    pub fn echo(line: EchoLine) -> Player {
        Player {
            once: VecDeque::new(),
            then: Some(Source::Echo(line)),
        }
    }

    /// Fills one frame (any length; the engine uses [`FRAME_SAMPLES`]); the part after
    /// the end of the last prompt is silence. Returns false once everything was played
    /// and nothing loops (`out` is all silence): the player can be dropped.
    pub fn fill(&mut self, out: &mut [i16]) -> bool {
        let mut done = 0;
        let mut wrapped = false;
        while done < out.len() {
            if let Some(src) = self.once.front_mut() {
                done += src.fill(&mut out[done..]);
                if done < out.len() {
                    self.once.pop_front();
                }
                continue;
            }
            let Some(src) = self.then.as_mut() else {
                break;
            };
            let n = src.fill(&mut out[done..]);
            done += n;
            if done < out.len() {
                if wrapped && n == 0 {
                    break; // an empty loop: nothing to play
                }
                src.rewind();
                wrapped = true;
            }
        }
        out[done..].fill(0);
        done > 0
    }

    /// Nothing left to play.
    pub fn finished(&self) -> bool {
        self.once.is_empty() && self.then.is_none()
    }
}
