//! Status LEDs, the reset/provision button and the power-fail bypass relay.
//!
//! [`CdevGpio`] drives the real lines through the Linux GPIO character device;
//! [`MemoryGpio`] keeps the state in memory for the simulated board and tests, with a
//! [`MemoryGpioHandle`] to observe LEDs and relay and to press the button.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use gpio_cdev::{Chip, LineHandle, LineRequestFlags};

use crate::error::{Error, Result};
use crate::profile::GpioConfig;

/// Consumer label shown by `gpioinfo` for lines the daemon holds.
pub const GPIO_CONSUMER: &str = "branchd";

/// A status LED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Led {
    /// Power / system status.
    Power,
    /// WAN link / HQ reachability.
    Wan,
    /// SIP trunk registration.
    Sip,
    /// Per analog port, 1-based (FXS ports first, then FXO).
    Port(u8),
}

/// The board's GPIO: LEDs, reset button, power-fail relay.
pub trait Gpio: Send + std::fmt::Debug {
    /// Switches an LED on or off.
    fn set_led(&mut self, led: Led, on: bool) -> Result<()>;
    /// True while the reset/provision button is held down.
    fn reset_button_pressed(&mut self) -> Result<bool>;
    /// Engages (true: FXS 1 wired straight to FXO 1) or releases the power-fail bypass.
    fn set_power_fail_relay(&mut self, engaged: bool) -> Result<()>;
}

/// Real GPIO lines through gpio-cdev, requested from a [`GpioConfig`].
///
/// LEDs start off. The relay line is requested engaged (logical 1, bypass active), the
/// state the box is in while powered off, so taking the line over never cuts a call the
/// bypass is carrying; the daemon releases it once the ports are up. The button is
/// requested active-low, so a logical 1 means pressed.
#[derive(Debug)]
pub struct CdevGpio {
    chip: PathBuf,
    power: (u32, LineHandle),
    wan: (u32, LineHandle),
    sip: (u32, LineHandle),
    ports: Vec<(u32, LineHandle)>,
    button: (u32, LineHandle),
    relay: (u32, LineHandle),
}

impl CdevGpio {
    /// Opens the chip and requests every line named in `cfg`.
    pub fn open(cfg: &GpioConfig) -> Result<CdevGpio> {
        let path = cfg.chip.clone();
        let mut chip = Chip::new(&cfg.chip).map_err(|source| Error::Gpio {
            chip: path.clone(),
            line: None,
            source,
        })?;
        let mut request = |offset: u32, flags: LineRequestFlags, default: u8| {
            chip.get_line(offset)
                .and_then(|line| line.request(flags, default, GPIO_CONSUMER))
                .map(|h| (offset, h))
                .map_err(|source| Error::Gpio {
                    chip: path.clone(),
                    line: Some(offset),
                    source,
                })
        };
        let power = request(cfg.led_power, LineRequestFlags::OUTPUT, 0)?;
        let wan = request(cfg.led_wan, LineRequestFlags::OUTPUT, 0)?;
        let sip = request(cfg.led_sip, LineRequestFlags::OUTPUT, 0)?;
        let ports = cfg
            .led_ports
            .iter()
            .map(|&o| request(o, LineRequestFlags::OUTPUT, 0))
            .collect::<Result<Vec<_>>>()?;
        let button = request(
            cfg.reset_button,
            LineRequestFlags::INPUT | LineRequestFlags::ACTIVE_LOW,
            0,
        )?;
        let relay = request(cfg.power_fail_relay, LineRequestFlags::OUTPUT, 1)?;
        Ok(CdevGpio {
            chip: cfg.chip.clone(),
            power,
            wan,
            sip,
            ports,
            button,
            relay,
        })
    }

    fn gpio_err(&self, line: u32) -> impl FnOnce(gpio_cdev::Error) -> Error + '_ {
        move |source| Error::Gpio {
            chip: self.chip.clone(),
            line: Some(line),
            source,
        }
    }
}

impl Gpio for CdevGpio {
    fn set_led(&mut self, led: Led, on: bool) -> Result<()> {
        let (offset, handle) = match led {
            Led::Power => &self.power,
            Led::Wan => &self.wan,
            Led::Sip => &self.sip,
            Led::Port(p) => usize::from(p)
                .checked_sub(1)
                .and_then(|i| self.ports.get(i))
                .ok_or(Error::NoSuchLed { led })?,
        };
        handle
            .set_value(u8::from(on))
            .map_err(self.gpio_err(*offset))
    }

    fn reset_button_pressed(&mut self) -> Result<bool> {
        let (offset, handle) = &self.button;
        Ok(handle.get_value().map_err(self.gpio_err(*offset))? != 0)
    }

    fn set_power_fail_relay(&mut self, engaged: bool) -> Result<()> {
        let (offset, handle) = &self.relay;
        handle
            .set_value(u8::from(engaged))
            .map_err(self.gpio_err(*offset))
    }
}

#[derive(Debug)]
struct MemoryState {
    power: bool,
    wan: bool,
    sip: bool,
    ports: Vec<bool>,
    button: bool,
    relay: bool,
}

/// GPIO state kept in memory (simulated board, tests); same start state as [`CdevGpio`].
#[derive(Debug)]
pub struct MemoryGpio {
    state: Arc<Mutex<MemoryState>>,
}

/// Observes and pokes a [`MemoryGpio`] from elsewhere (tests, the simulator console).
#[derive(Debug, Clone)]
pub struct MemoryGpioHandle {
    state: Arc<Mutex<MemoryState>>,
}

fn lock(state: &Mutex<MemoryState>) -> MutexGuard<'_, MemoryState> {
    // The state is plain booleans, always consistent; a panic elsewhere cannot break it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryGpio {
    /// In-memory GPIO for a board with `port_count` port LEDs.
    pub fn new(port_count: u8) -> (MemoryGpio, MemoryGpioHandle) {
        let state = Arc::new(Mutex::new(MemoryState {
            power: false,
            wan: false,
            sip: false,
            ports: vec![false; usize::from(port_count)],
            button: false,
            relay: true,
        }));
        (
            MemoryGpio {
                state: state.clone(),
            },
            MemoryGpioHandle { state },
        )
    }
}

impl Gpio for MemoryGpio {
    fn set_led(&mut self, led: Led, on: bool) -> Result<()> {
        let mut s = lock(&self.state);
        let slot = match led {
            Led::Power => &mut s.power,
            Led::Wan => &mut s.wan,
            Led::Sip => &mut s.sip,
            Led::Port(p) => usize::from(p)
                .checked_sub(1)
                .and_then(|i| s.ports.get_mut(i))
                .ok_or(Error::NoSuchLed { led })?,
        };
        *slot = on;
        Ok(())
    }

    fn reset_button_pressed(&mut self) -> Result<bool> {
        Ok(lock(&self.state).button)
    }

    fn set_power_fail_relay(&mut self, engaged: bool) -> Result<()> {
        lock(&self.state).relay = engaged;
        Ok(())
    }
}

impl MemoryGpioHandle {
    /// Whether `led` is lit; false for an LED the board does not have.
    pub fn led(&self, led: Led) -> bool {
        let s = lock(&self.state);
        match led {
            Led::Power => s.power,
            Led::Wan => s.wan,
            Led::Sip => s.sip,
            Led::Port(p) => usize::from(p)
                .checked_sub(1)
                .and_then(|i| s.ports.get(i))
                .copied()
                .unwrap_or(false),
        }
    }

    /// Whether the power-fail bypass relay is engaged.
    pub fn relay_engaged(&self) -> bool {
        lock(&self.state).relay
    }

    /// Presses (true) or releases (false) the reset button.
    pub fn press_reset(&self, pressed: bool) {
        lock(&self.state).button = pressed;
    }

    /// Whether the reset button is down.
    pub fn reset_pressed(&self) -> bool {
        lock(&self.state).button
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_gpio_leds_button_relay() {
        let (mut g, h) = MemoryGpio::new(6);
        assert!(!h.led(Led::Power));
        g.set_led(Led::Power, true).unwrap();
        g.set_led(Led::Port(6), true).unwrap();
        assert!(h.led(Led::Power));
        assert!(h.led(Led::Port(6)));
        assert!(!h.led(Led::Port(5)));
        assert!(!h.led(Led::Wan) && !h.led(Led::Sip));
        g.set_led(Led::Power, false).unwrap();
        assert!(!h.led(Led::Power));

        assert!(matches!(
            g.set_led(Led::Port(7), true),
            Err(Error::NoSuchLed { led: Led::Port(7) })
        ));
        assert!(matches!(
            g.set_led(Led::Port(0), true),
            Err(Error::NoSuchLed { .. })
        ));

        assert!(!g.reset_button_pressed().unwrap());
        h.press_reset(true);
        assert!(g.reset_button_pressed().unwrap());
        h.press_reset(false);
        assert!(!g.reset_button_pressed().unwrap());

        assert!(h.relay_engaged());
        g.set_power_fail_relay(false).unwrap();
        assert!(!h.relay_engaged());
    }

    #[test]
    fn cdev_missing_chip_names_path() {
        let mut cfg = crate::profile::BoardProfile::builtin("bl-400")
            .unwrap()
            .gpio
            .unwrap();
        cfg.chip = PathBuf::from("/nonexistent/gpiochip9");
        match CdevGpio::open(&cfg) {
            Err(e @ Error::Gpio { .. }) => {
                let Error::Gpio { chip, line, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(chip, &PathBuf::from("/nonexistent/gpiochip9"));
                assert_eq!(*line, None);
                assert!(e.to_string().contains("/nonexistent/gpiochip9"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
