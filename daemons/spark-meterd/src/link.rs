//! The byte link to the radio module: a serial device (raw mode, set with termios) or a Unix
//! socket (the simulator), both as a pair of tokio reader and writer halves.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// Where the radio module is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RadioAddress {
    /// A serial device such as `/dev/ttyS1` (or a pty's slave end).
    Tty(PathBuf),
    /// A Unix socket (`unix:/run/spark/radio.sock` in the config), where the simulator listens.
    Unix(PathBuf),
}

impl RadioAddress {
    /// `unix:PATH` or a device path.
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix("unix:") {
            Some(path) => RadioAddress::Unix(PathBuf::from(path)),
            None => RadioAddress::Tty(PathBuf::from(text)),
        }
    }
}

impl fmt::Display for RadioAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RadioAddress::Tty(p) => write!(f, "{}", p.display()),
            RadioAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RadioAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(RadioAddress::parse(&text))
    }
}

/// Reading half of a radio link.
pub type LinkReader = Pin<Box<dyn AsyncRead + Send>>;
/// Writing half of a radio link.
pub type LinkWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Puts a terminal in raw mode (no echo, no line editing, no CR/LF translation, 8 bits, no
/// flow control) at `baud` if given: the module speaks binary frames.
pub fn make_raw(fd: BorrowedFd<'_>, baud: Option<u32>) -> std::io::Result<()> {
    use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
    let mut t = tcgetattr(fd)?;
    t.make_raw();
    if let Some(baud) = baud {
        t.set_speed(baud)?;
    }
    tcsetattr(fd, OptionalActions::Now, &t)?;
    Ok(())
}

/// A pollable descriptor (a tty, a pty master) as tokio reader and writer halves: two
/// descriptors for the same open file, each registered with the reactor on its own.
pub fn async_pair(fd: OwnedFd) -> std::io::Result<(pipe::Receiver, pipe::Sender)> {
    // The reactor needs non-blocking I/O; the flag is on the open file, so the dup shares it.
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    let dup = fd.try_clone()?;
    // The unchecked constructors accept any pollable descriptor, not only FIFOs.
    let reader = pipe::Receiver::from_owned_fd_unchecked(fd)?;
    let writer = pipe::Sender::from_owned_fd_unchecked(dup)?;
    Ok((reader, writer))
}

/// Opens the link to the module.
pub async fn connect(
    address: &RadioAddress,
    baud: Option<u32>,
) -> std::io::Result<(LinkReader, LinkWriter)> {
    match address {
        RadioAddress::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            let (r, w) = stream.into_split();
            Ok((Box::pin(r), Box::pin(w)))
        }
        RadioAddress::Tty(path) => {
            use rustix::fs::{Mode, OFlags, open};
            let fd = open(
                path,
                OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            use std::os::fd::AsFd;
            make_raw(fd.as_fd(), baud)?;
            // Bytes that sat in the line while nobody listened are stale halves of frames.
            let _ = rustix::termios::tcflush(fd.as_fd(), rustix::termios::QueueSelector::IFlush);
            let (r, w) = async_pair(fd)?;
            Ok((Box::pin(r), Box::pin(w)))
        }
    }
}
