use std::path::Path;

use branchline_board::dsp::tone_ratio;

use super::*;

fn wav(channels: u16, rate: u32, bits: u16, float: bool, samples: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut out = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
        for i in 0..samples * usize::from(channels) {
            match (float, bits) {
                (true, _) => w.write_sample(0.25f32).unwrap(),
                (false, 8) => w.write_sample((i % 100) as i8).unwrap(),
                (false, _) => w.write_sample((i as i16).wrapping_mul(7)).unwrap(),
            }
        }
        w.finalize().unwrap();
    }
    out.into_inner()
}

fn ramp(n: usize) -> Vec<u8> {
    wav(1, 8000, 16, false, n)
}

#[test]
fn decodes_pcm_mono_8k_16bit() {
    let p = Prompt::decode("hello", Path::new("hello.wav"), &ramp(8000)).unwrap();
    assert_eq!(p.name(), "hello");
    assert_eq!(p.samples().len(), 8000);
    assert_eq!(p.samples()[3], 21);
    assert_eq!(p.duration(), Duration::from_secs(1));
}

#[test]
fn refuses_other_formats_naming_what_is_wrong() {
    let path = Path::new("x.wav");
    let cases = [
        (wav(2, 8000, 16, false, 100), "2 channels"),
        (wav(1, 16000, 16, false, 100), "16000 Hz"),
        (wav(1, 8000, 8, false, 100), "8-bit"),
        (wav(1, 8000, 32, true, 100), "floating-point samples"),
        (wav(2, 44100, 16, false, 100), "2 channels, 44100 Hz"),
    ];
    for (bytes, what) in cases {
        let e = Prompt::decode("x", path, &bytes).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PromptError::Format { .. }), "{msg}");
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains("x.wav") && msg.contains("sox"), "{msg}");
    }
}

#[test]
fn refuses_garbage_truncated_empty_and_long_files() {
    let path = Path::new("bad.wav");
    for bytes in [
        b"".to_vec(),
        b"RIFF\0\0\0\0WAVE".to_vec(),
        b"hello, this is not a wav file at all".to_vec(),
        ramp(100)[..30].to_vec(),
    ] {
        let e = Prompt::decode("bad", path, &bytes).unwrap_err();
        assert!(matches!(e, PromptError::Wav { .. }), "{e}");
    }
    // A header cut in the data chunk: hound reports the short read.
    let cut = ramp(1000);
    let e = Prompt::decode("bad", path, &cut[..cut.len() - 501]).unwrap_err();
    assert!(matches!(e, PromptError::Wav { .. }), "{e}");
    assert!(matches!(
        Prompt::decode("bad", path, &ramp(0)),
        Err(PromptError::Empty { .. })
    ));
    // Declares more than ten minutes of audio: refused before reading it.
    let mut long = ramp(10);
    let data = (MAX_PROMPT_SECS * PROMPT_RATE * 2 + 2).to_le_bytes();
    long[40..44].copy_from_slice(&data);
    assert!(matches!(
        Prompt::decode("long", path, &long),
        Err(PromptError::TooLong { .. })
    ));
}

#[test]
fn prompt_names() {
    for ok in ["moh", "sales-moh", "q_1", &"a".repeat(64)] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in ["", "Sales", "a b", "a.b", "ä", "../x", &"a".repeat(65)] {
        assert!(!valid_name(bad), "{bad}");
    }
}

#[test]
fn load_dir_keeps_good_files_and_names_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("welcome.wav"), ramp(4000)).unwrap();
    std::fs::write(dir.path().join("moh.WAV"), ramp(800)).unwrap();
    std::fs::write(dir.path().join("stereo.wav"), wav(2, 8000, 16, false, 10)).unwrap();
    std::fs::write(dir.path().join("Bad Name.wav"), ramp(10)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a prompt").unwrap();
    let (lib, errors) = PromptLibrary::load_dir(dir.path());
    assert_eq!(lib.len(), 2);
    assert_eq!(
        lib.get("welcome").unwrap().duration(),
        Duration::from_millis(500)
    );
    assert_eq!(
        lib.get("moh").unwrap().duration(),
        Duration::from_millis(100)
    );
    assert_eq!(
        lib.durations().keys().collect::<Vec<_>>(),
        ["moh", "welcome"]
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(msgs
        .iter()
        .any(|m| m.contains("Bad Name.wav") && m.contains("name")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("stereo.wav") && m.contains("2 channels")));

    let (lib, errors) = PromptLibrary::load_dir(&dir.path().join("missing"));
    assert!(lib.is_empty() && errors.is_empty());
}

#[test]
fn later_directories_replace_prompts_of_the_same_name() {
    let (system, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(system.path().join("welcome.wav"), ramp(4000)).unwrap();
    std::fs::write(system.path().join("moh.wav"), ramp(800)).unwrap();
    std::fs::write(data.path().join("welcome.wav"), ramp(1600)).unwrap();
    std::fs::write(data.path().join("broken.wav"), b"RIFF").unwrap();
    let missing = system.path().join("missing");
    let (lib, errors) = PromptLibrary::load_dirs(&[system.path(), &missing, data.path()]);
    assert_eq!(lib.len(), 2);
    // The data directory's welcome (200 ms) over the built-in one (500 ms).
    assert_eq!(
        lib.get("welcome").unwrap().duration(),
        Duration::from_millis(200)
    );
    assert_eq!(
        lib.get("moh").unwrap().duration(),
        Duration::from_millis(100)
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("broken.wav"), "{errors:?}");
}

/// The built-in set the image installs: every file of `prompts.txt` is there and
/// loads (the format the box plays), and it holds every word of the queue
/// announcement up to 99 callers and minutes.
#[test]
fn the_built_in_prompt_set_is_whole_and_playable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("image/rootfs/usr/share/branchline/prompts");
    let (lib, errors) = PromptLibrary::load_dir(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    let listed: Vec<String> = std::fs::read_to_string(root.join("image/prompts/prompts.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('|').next().unwrap().to_owned())
        .collect();
    assert_eq!(lib.durations().keys().cloned().collect::<Vec<_>>(), {
        let mut sorted = listed.clone();
        sorted.sort();
        sorted
    });
    for (name, d) in lib.durations() {
        assert!(
            d > Duration::from_millis(150) && d < Duration::from_secs(15),
            "{name}: {d:?}"
        );
        // Speech, not silence: a loud enough sample somewhere.
        let peak = lib
            .get(&name)
            .unwrap()
            .samples()
            .iter()
            .map(|s| s.unsigned_abs())
            .max();
        assert!(peak > Some(8000), "{name}: peak {peak:?}");
    }
    let have = lib.durations();
    for position in 1..100 {
        let words = crate::call::queue_announcement(
            &have,
            position,
            Some(Duration::from_secs(60 * position as u64)),
        );
        assert!(
            words.len() > 3 && words.contains(&"queue-wait".to_owned()),
            "{position}: {words:?}"
        );
    }
}

fn lib_with(prompts: &[(&str, Vec<i16>)]) -> PromptLibrary {
    let mut lib = PromptLibrary::default();
    for (n, s) in prompts {
        lib.insert(Prompt::from_samples(n, s.clone()));
    }
    lib
}

#[test]
fn player_plays_prompts_once_in_order_then_silence() {
    let lib = lib_with(&[("a", vec![1; 100]), ("b", vec![2; 150])]);
    let mut p = lib.player(
        &Playback {
            once: vec!["a".into(), "missing".into(), "b".into()],
            then: None,
        },
        Country::Us,
    );
    let mut frame = [9i16; FRAME_SAMPLES];
    assert!(p.fill(&mut frame));
    assert!(frame[..100].iter().all(|&s| s == 1));
    assert!(frame[100..].iter().all(|&s| s == 2));
    assert!(p.fill(&mut frame));
    assert!(frame[..90].iter().all(|&s| s == 2), "{:?}", &frame[..95]);
    assert!(frame[90..].iter().all(|&s| s == 0));
    assert!(p.finished());
    assert!(!p.fill(&mut frame));
    assert!(frame.iter().all(|&s| s == 0));
}

#[test]
fn player_loops_a_prompt_seamlessly() {
    let samples: Vec<i16> = (0..70).collect();
    let lib = lib_with(&[("loop", samples.clone())]);
    let mut p = lib.player(&Playback::looped(Sound::Prompt("loop".into())), Country::Us);
    let mut heard = Vec::new();
    for _ in 0..10 {
        let mut frame = [0i16; FRAME_SAMPLES];
        assert!(p.fill(&mut frame));
        heard.extend_from_slice(&frame);
    }
    for (i, s) in heard.iter().enumerate() {
        assert_eq!(*s, (i % 70) as i16, "sample {i}");
    }
    assert!(!p.finished());
}

#[test]
fn player_renders_the_tone_after_the_prompts() {
    let lib = lib_with(&[("hi", vec![500; 160 * 3])]);
    let mut p = lib.player(
        &Playback {
            once: vec!["hi".into()],
            then: Some(Sound::Tone(Tone::Dial)),
        },
        Country::De,
    );
    let mut frame = [0i16; FRAME_SAMPLES];
    for _ in 0..3 {
        assert!(p.fill(&mut frame));
        assert!(frame.iter().all(|&s| s == 500));
    }
    let mut tone = Vec::new();
    for _ in 0..10 {
        assert!(p.fill(&mut frame));
        tone.extend_from_slice(&frame);
    }
    // Germany's dial tone is 425 Hz continuous.
    assert!(
        tone_ratio(&tone, 425.0) > 0.9,
        "{}",
        tone_ratio(&tone, 425.0)
    );
}

#[test]
fn a_loop_of_an_unknown_prompt_plays_nothing() {
    let mut p = PromptLibrary::default()
        .player(&Playback::looped(Sound::Prompt("nope".into())), Country::Us);
    let mut frame = [5i16; FRAME_SAMPLES];
    assert!(!p.fill(&mut frame));
    assert!(frame.iter().all(|&s| s == 0));
}
