//! Microphone and speaker through cpal (the `cpal` cargo feature; ALSA on Linux, Debian
//! package `libasound2-dev` to build). The device streams live on a thread of their own
//! (cpal streams are not `Send` everywhere) and meet the 20 ms clock through bounded
//! buffers: capture keeps at most 200 ms (older audio is dropped, latency stays low),
//! playback at most 200 ms (a full buffer drops the oldest frame).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::source::Source;
use super::{FRAME, Frame, SAMPLE_RATE};

/// 200 ms of 48 kHz mono.
const MAX_BUFFERED: usize = 10 * FRAME;

type Buffer = Arc<Mutex<VecDeque<i16>>>;

/// Keeps a device stream alive until dropped.
struct StreamThread {
    stop: Arc<AtomicBool>,
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One sample from a device frame of `channels` interleaved f32 samples (mixed to mono).
pub fn downmix(frame: &[f32]) -> i16 {
    if frame.is_empty() {
        return 0;
    }
    let mean = frame.iter().sum::<f32>() / frame.len() as f32;
    (mean.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16
}

pub fn to_f32(sample: i16) -> f32 {
    f32::from(sample) / f32::from(i16::MAX)
}

/// Appends to a bounded buffer, dropping the oldest samples past `MAX_BUFFERED`.
pub fn push_bounded(buffer: &mut VecDeque<i16>, samples: impl IntoIterator<Item = i16>) {
    buffer.extend(samples);
    let excess = buffer.len().saturating_sub(MAX_BUFFERED);
    buffer.drain(..excess);
}

/// Builds a stream on its own thread and keeps it playing; errors come back to the caller.
fn spawn_stream(
    build: impl FnOnce() -> Result<cpal::Stream, String> + Send + 'static,
) -> Result<StreamThread, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("concord-audio".into())
        .spawn(move || {
            let stream = match build().and_then(|s| s.play().map(|()| s).map_err(|e| e.to_string()))
            {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(stream);
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the audio device did not start".to_owned())??;
    Ok(StreamThread { stop })
}

fn config(device: &cpal::Device, input: bool) -> Result<cpal::StreamConfig, String> {
    let channels = if input {
        device.default_input_config()
    } else {
        device.default_output_config()
    }
    .map(|c| c.channels())
    .unwrap_or(1);
    Ok(cpal::StreamConfig {
        channels,
        sample_rate: SAMPLE_RATE,
        buffer_size: cpal::BufferSize::Default,
    })
}

/// The default microphone.
pub struct DeviceSource {
    buffer: Buffer,
    _stream: StreamThread,
}

impl DeviceSource {
    pub fn open() -> Result<DeviceSource, String> {
        let buffer: Buffer = Arc::new(Mutex::new(VecDeque::with_capacity(MAX_BUFFERED)));
        let captured = buffer.clone();
        let stream = spawn_stream(move || {
            let device = cpal::default_host()
                .default_input_device()
                .ok_or("no audio input device")?;
            let config = config(&device, true)?;
            let channels = usize::from(config.channels.max(1));
            device
                .build_input_stream::<f32, _, _>(
                    config,
                    move |data: &[f32], _: &cpal::InputCallbackInfo| {
                        let mono = data.chunks(channels).map(downmix);
                        push_bounded(&mut captured.lock().expect("capture buffer"), mono);
                    },
                    |e| tracing::warn!(error = %e, "audio input"),
                    None,
                )
                .map_err(|e| format!("audio input at 48 kHz: {e}"))
        })?;
        Ok(DeviceSource {
            buffer,
            _stream: stream,
        })
    }
}

impl Source for DeviceSource {
    fn next_frame(&mut self) -> Frame {
        let mut buffer = self.buffer.lock().expect("capture buffer");
        let take = buffer.len().min(FRAME);
        let mut frame: Frame = buffer.drain(..take).collect();
        // The device fell behind the clock: pad with silence.
        frame.resize(FRAME, 0);
        frame
    }
}

/// The default speaker.
pub struct DeviceSink {
    buffer: Buffer,
    _stream: StreamThread,
}

impl DeviceSink {
    pub fn open() -> Result<DeviceSink, String> {
        let buffer: Buffer = Arc::new(Mutex::new(VecDeque::with_capacity(MAX_BUFFERED)));
        let playing = buffer.clone();
        let stream = spawn_stream(move || {
            let device = cpal::default_host()
                .default_output_device()
                .ok_or("no audio output device")?;
            let config = config(&device, false)?;
            let channels = usize::from(config.channels.max(1));
            device
                .build_output_stream::<f32, _, _>(
                    config,
                    move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
                        let mut buffer = playing.lock().expect("playback buffer");
                        for frame in data.chunks_mut(channels) {
                            let s = to_f32(buffer.pop_front().unwrap_or(0));
                            frame.fill(s);
                        }
                    },
                    |e| tracing::warn!(error = %e, "audio output"),
                    None,
                )
                .map_err(|e| format!("audio output at 48 kHz: {e}"))
        })?;
        Ok(DeviceSink {
            buffer,
            _stream: stream,
        })
    }

    pub fn write(&self, frame: &[i16]) {
        push_bounded(
            &mut self.buffer.lock().expect("playback buffer"),
            frame.iter().copied(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_is_mixed_to_mono_and_clipped() {
        assert_eq!(downmix(&[0.5, 0.5]), (0.5 * 32767.0) as i16);
        assert_eq!(downmix(&[1.0, -1.0]), 0);
        assert_eq!(downmix(&[3.0]), i16::MAX);
        assert_eq!(downmix(&[]), 0);
        assert!((to_f32(i16::MAX) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn buffers_keep_the_newest_200_ms() {
        let mut b = VecDeque::new();
        push_bounded(&mut b, (0..(MAX_BUFFERED + 5)).map(|i| i as i16));
        assert_eq!(b.len(), MAX_BUFFERED);
        assert_eq!(b.front().copied(), Some(5));
    }
}
