//! Throttled progress lines on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Prints at most one progress line per interval; overwrites in place on a terminal.
pub struct Progress {
    last: Instant,
    every: Duration,
    tty: bool,
    quiet: bool,
    printed: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        Self {
            last: Instant::now(),
            every,
            tty,
            quiet,
            printed: false,
        }
    }

    /// Prints `line()` if the interval has passed.
    pub fn tick(&mut self, line: impl FnOnce() -> String) {
        if self.quiet || self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", line());
        } else {
            let _ = writeln!(err, "{}", line());
        }
        self.printed = true;
    }

    /// Ends the in-place line, if any.
    pub fn finish(&mut self) {
        if self.tty && self.printed && !self.quiet {
            eprintln!();
        }
        self.printed = false;
    }
}
