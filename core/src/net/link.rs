//! The WebSocket under a connection: open while frames flow, parked while
//! the connection is idle.
//!
//! tungstenite keeps, for the life of a socket, a read buffer of
//! `read_buffer_size` (zero-filled at the first read) and a write buffer
//! with the capacity of the largest burst it ever wrote. A parked link
//! holds the socket alone: tungstenite and its buffers are dropped, and made
//! again, from the bytes just read, when the peer sends something (or when
//! this node has a frame for it).
//!
//! Parking is safe only when tungstenite holds nothing the socket does not:
//! nothing unwritten (a queued pong included), no half-received fragmented
//! message, no bytes read but not yet returned as a message. A flush sees to
//! the first. For the others, the socket is wrapped in a [`Tallied`] reader
//! that follows the frame headers of every byte handed to tungstenite and
//! counts the frames that end a message (a final data frame or a control
//! frame, each returned as one message): when that count equals the messages
//! tungstenite returned, and no frame is part-way, tungstenite's read buffer
//! is empty.
//!
//! The tally must start at a frame boundary: an accepted connection whose
//! upgrade request came alone (a client waits for the 101 before it sends
//! frames) starts right after the handshake. A dialed connection may have
//! frames behind the 101 in tungstenite's buffer, unseen: it never parks
//! (a node dials few peers).

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::config::websocket_config;
use super::socket::{HasSocket, Socket};

/// What a parked link reads at once, on the stack, before tungstenite is
/// made again (the rest of a burst tungstenite reads itself).
const RESUME_READ: usize = 4096;

/// The frames in the bytes read from a socket: where the current frame's
/// header or payload ends, and how many frames that end a message passed.
#[derive(Debug, Default)]
struct Tally {
    /// Counting started (at a frame boundary).
    counting: bool,
    /// The current frame's header, as far as it was read.
    header: [u8; 14],
    header_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// Frames that end a message: a final data or continuation frame, or a
    /// control frame.
    message_ends: u64,
    /// A data message's first frame came without its final one.
    fragmented: bool,
}

/// The size of a frame header whose second byte is `second`.
fn header_size(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length in a whole frame header.
fn payload_length(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u16::from_be_bytes([header[2], header[3]]) as u64,
        127 => u64::from_be_bytes(header[2..10].try_into().unwrap_or_default()),
        short => short as u64,
    }
}

impl Tally {
    fn feed(&mut self, mut bytes: &[u8]) {
        if !self.counting {
            return;
        }
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                if self.payload_left == 0 {
                    self.frame_ended();
                }
                continue;
            }
            // The usual case: a whole header in `bytes`, read in place.
            if self.header_len == 0 && bytes.len() >= 2 && bytes.len() >= header_size(bytes[1]) {
                let size = header_size(bytes[1]);
                self.header[0] = bytes[0];
                let frame = size as u64 + payload_length(&bytes[..size]);
                if frame <= bytes.len() as u64 {
                    bytes = &bytes[frame as usize..];
                    self.frame_ended();
                } else {
                    self.payload_left = frame - bytes.len() as u64;
                    bytes = &[];
                }
                continue;
            }
            // A header split between reads: gathered until whole.
            let at = self.header_len as usize;
            let size = if at < 2 { 2 } else { header_size(self.header[1]) };
            let n = (size - at).min(bytes.len());
            self.header[at..at + n].copy_from_slice(&bytes[..n]);
            self.header_len += n as u8;
            bytes = &bytes[n..];
            let whole = self.header_len >= 2 && self.header_len as usize == header_size(self.header[1]);
            if whole {
                self.payload_left = payload_length(&self.header);
                if self.payload_left == 0 {
                    self.frame_ended();
                }
            }
        }
    }

    fn frame_ended(&mut self) {
        let fin = self.header[0] & 0x80 != 0;
        match self.header[0] & 0x0f {
            op if op & 0x08 != 0 => self.message_ends += 1,
            0 if fin => {
                self.message_ends += 1;
                self.fragmented = false;
            }
            0 => {}
            _ if fin => self.message_ends += 1,
            _ => self.fragmented = true,
        }
        self.header_len = 0;
    }

    /// True when every byte read belongs to a message already returned:
    /// `returned` messages came out of tungstenite.
    fn all_returned(&self, returned: u64) -> bool {
        self.counting
            && self.header_len == 0
            && self.payload_left == 0
            && !self.fragmented
            && self.message_ends == returned
    }
}

/// A socket that tallies the frames read through it (see the module docs).
pub(crate) struct Tallied<S> {
    inner: S,
    tally: Tally,
}

impl<S> Tallied<S> {
    /// Wraps `inner`; nothing is counted until [`Link::new`] says the
    /// handshake left tungstenite no bytes.
    pub(crate) fn new(inner: S) -> Tallied<S> {
        Tallied { inner, tally: Tally::default() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tallied<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.tally.feed(&buf.filled()[before..]);
        }
        polled
    }
}

delegate_async_write!(Tallied);

impl<S: HasSocket> HasSocket for Tallied<S> {
    fn socket(&mut self) -> Option<&mut Socket> {
        self.inner.socket()
    }
}

/// The WebSocket of one connection (see the module docs).
pub(crate) struct Link<S> {
    state: State<S>,
    role: Role,
    /// The `max_frame_bytes` of tungstenite's settings (see
    /// `config::websocket_config`).
    max_frame_bytes: usize,
    /// Messages tungstenite returned.
    returned: u64,
}

enum State<S> {
    /// tungstenite at work (boxed: a parked link is only the socket).
    Open(Box<WebSocketStream<Tallied<S>>>),
    Parked(Tallied<S>),
    /// Only while changing state, or after tungstenite could not be made
    /// again (the connection then ends).
    Gone,
}

fn gone() -> tungstenite::Error {
    tungstenite::Error::Io(io::Error::new(io::ErrorKind::NotConnected, "the WebSocket could not be resumed"))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// A link over `ws`, whose handshake tungstenite just did with `role`
    /// and the settings `websocket_config(max_frame_bytes)`. `at_boundary`:
    /// tungstenite holds no bytes beyond the handshake (the link may then
    /// park).
    pub(crate) fn new(
        ws: WebSocketStream<Tallied<S>>,
        role: Role,
        max_frame_bytes: usize,
        at_boundary: bool,
    ) -> Link<S> {
        let state = if at_boundary {
            // Nothing read yet: parked from the start, so a peer that never
            // sends anything never costs a read buffer.
            let mut socket = ws.into_inner();
            socket.tally.counting = true;
            State::Parked(socket)
        } else {
            State::Open(Box::new(ws))
        };
        Link { state, role, max_frame_bytes, returned: 0 }
    }

    /// Whether the link is open and may park (see the module docs).
    pub(crate) fn may_park(&self) -> bool {
        matches!(&self.state, State::Open(ws) if ws.get_ref().tally.counting)
    }

    /// Drops the socket (the connection is over).
    pub(crate) fn close(&mut self) {
        self.state = State::Gone;
    }

    /// Makes tungstenite again over the parked socket, with `read` (bytes
    /// just read from it) as the start of its read buffer.
    fn resume(
        &mut self,
        cx: &mut Context<'_>,
        read: Vec<u8>,
    ) -> Result<&mut WebSocketStream<Tallied<S>>, tungstenite::Error> {
        if let State::Parked(_) = self.state {
            let State::Parked(socket) = std::mem::replace(&mut self.state, State::Gone) else {
                return Err(gone());
            };
            let config = websocket_config(self.max_frame_bytes);
            let resumed = WebSocketStream::from_partially_read(socket, read, self.role, Some(config));
            // Ready at its first poll: it only wraps the socket.
            if let Poll::Ready(ws) = std::pin::pin!(resumed).poll(cx) {
                self.state = State::Open(Box::new(ws));
            }
        }
        match &mut self.state {
            State::Open(ws) => Ok(ws),
            _ => Err(gone()),
        }
    }

    /// The next message, as `WebSocketStream::poll_next`.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WsMessage, tungstenite::Error>>> {
        if let State::Parked(socket) = &mut self.state {
            let mut stack = [const { MaybeUninit::<u8>::uninit() }; RESUME_READ];
            let mut buf = ReadBuf::uninit(&mut stack);
            match Pin::new(socket).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(tungstenite::Error::Io(e)))),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(None),
                Poll::Ready(Ok(())) => {
                    let read = buf.filled().to_vec();
                    if let Err(e) = self.resume(cx, read) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        }
        let State::Open(ws) = &mut self.state else { return Poll::Ready(Some(Err(gone()))) };
        let next = Pin::new(&mut **ws).poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = next {
            self.returned += 1;
        }
        next
    }

    /// As `Sink::poll_ready` (a parked link is always ready).
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        match &mut self.state {
            State::Open(ws) => Pin::new(&mut **ws).poll_ready(cx),
            State::Parked(_) => Poll::Ready(Ok(())),
            State::Gone => Poll::Ready(Err(gone())),
        }
    }

    /// As `Sink::start_send`; a parked link is resumed first.
    pub(crate) fn start_send(
        &mut self,
        cx: &mut Context<'_>,
        message: WsMessage,
    ) -> Result<(), tungstenite::Error> {
        let ws = self.resume(cx, Vec::new())?;
        Pin::new(ws).start_send(message)
    }

    /// As `Sink::poll_flush` (a parked link has nothing to flush).
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        match &mut self.state {
            State::Open(ws) => Pin::new(&mut **ws).poll_flush(cx),
            State::Parked(_) => Poll::Ready(Ok(())),
            State::Gone => Poll::Ready(Err(gone())),
        }
    }

    /// Parks the link if tungstenite holds nothing the socket does not (see
    /// the module docs); true when it did. The caller must then poll
    /// [`poll_next`](Self::poll_next) again, so that the socket wakes this
    /// task directly.
    pub(crate) fn park(&mut self, cx: &mut Context<'_>) -> bool {
        let State::Open(ws) = &mut self.state else { return false };
        if !ws.get_ref().tally.all_returned(self.returned) {
            return false;
        }
        // Writes out a queued pong, if any; parks only with nothing unwritten.
        if !matches!(Pin::new(&mut **ws).poll_flush(cx), Poll::Ready(Ok(()))) {
            return false;
        }
        let State::Open(ws) = std::mem::replace(&mut self.state, State::Gone) else { return false };
        self.state = State::Parked(ws.into_inner());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, masked: bool, payload_len: usize) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload_len {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', payload_len));
        f
    }

    fn counting() -> Tally {
        Tally { counting: true, ..Tally::default() }
    }

    #[test]
    fn whole_frames_of_every_length_form_are_counted() {
        for len in [0, 1, 125, 126, 300, 65_535, 65_536, 70_000] {
            for masked in [true, false] {
                let mut t = counting();
                t.feed(&frame(true, 1, masked, len));
                assert!(t.all_returned(1), "len {len} masked {masked}: {t:?}");
            }
        }
    }

    #[test]
    fn a_frame_split_anywhere_is_counted_once_whole() {
        let mut bytes = frame(true, 2, true, 300);
        bytes.extend(frame(true, 9, true, 4)); // a ping
        bytes.extend(frame(true, 1, true, 10));
        for split in 0..bytes.len() {
            let mut t = counting();
            t.feed(&bytes[..split]);
            t.feed(&bytes[split..]);
            assert!(t.all_returned(3), "split at {split}: {t:?}");
        }
        // One byte at a time.
        let mut t = counting();
        for b in &bytes {
            assert!(!t.all_returned(3));
            t.feed(std::slice::from_ref(b));
        }
        assert!(t.all_returned(3));
    }

    #[test]
    fn a_part_way_frame_or_an_unreturned_message_keeps_the_link_open() {
        let bytes = frame(true, 1, true, 50);
        let mut t = counting();
        t.feed(&bytes[..1]);
        assert!(!t.all_returned(0), "half a header");
        t.feed(&bytes[1..6]);
        assert!(!t.all_returned(0), "a header, no payload");
        t.feed(&bytes[6..]);
        assert!(!t.all_returned(0), "a whole frame tungstenite has not returned");
        assert!(t.all_returned(1));
    }

    #[test]
    fn a_fragmented_message_ends_with_its_final_frame_control_frames_between() {
        let mut t = counting();
        t.feed(&frame(false, 1, true, 5));
        assert!(!t.all_returned(0), "first fragment");
        t.feed(&frame(true, 10, true, 0)); // a pong in between: one message
        assert!(!t.all_returned(1), "still fragmented");
        t.feed(&frame(false, 0, true, 5));
        assert!(!t.all_returned(1));
        t.feed(&frame(true, 0, true, 5));
        assert!(t.all_returned(2));
    }

    #[test]
    fn nothing_is_counted_before_counting_starts() {
        let mut t = Tally::default();
        t.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert!(!t.all_returned(0), "a tally that never started never allows parking");
        assert_eq!((t.message_ends, t.header_len), (0, 0));
    }
}
