//! Framing for stream transports (TCP, TLS): where one message ends in a byte stream.

use super::{grammar, headers::Known, scan, Limits, ParseError};

/// What the start of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes to decide yet; read more and call again with the whole buffer.
    Incomplete,
    /// An RFC 5626 keepalive ping (CRLFCRLF): drop `consumed` bytes and answer with a
    /// single CRLF (the pong).
    KeepAlive {
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
    /// A complete message occupies `buf[start..start + len]`; hand that slice to
    /// [`super::parse`] and drop `start + len` bytes. `start` skips stray CRLFs
    /// (RFC 3261 7.5; also a peer's CRLF pong).
    Message {
        /// Offset of the start line.
        start: usize,
        /// Length of the message, head and body.
        len: usize,
    },
}

/// Finds the first message (or keepalive) at the front of a stream buffer.
///
/// Errors mean the stream cannot be resynchronised: the transport should answer 400 if
/// it can and close the connection. A head that grows past
/// [`Limits::max_message_len`] without ending, and a Content-Length that would exceed
/// it, are refused before the bytes arrive.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<Frame, ParseError> {
    if buf.starts_with(b"\r\n\r\n") {
        return Ok(Frame::KeepAlive { consumed: 4 });
    }
    let start = scan::leading_line_ends(buf);
    if start == buf.len() {
        // Only line ends so far: it may yet become a CRLFCRLF ping.
        return Ok(Frame::Incomplete);
    }
    let Some(body_offset) = scan::find_head_end(buf, start) else {
        let pending = buf.len() - start;
        if pending > limits.max_message_len {
            return Err(ParseError::TooLarge {
                len: pending,
                limit: limits.max_message_len,
            });
        }
        return Ok(Frame::Incomplete);
    };
    let head_len = body_offset - start;
    if head_len > limits.max_message_len {
        return Err(ParseError::TooLarge {
            len: head_len,
            limit: limits.max_message_len,
        });
    }
    let head = scan::scan_head(buf.get(start..body_offset).unwrap_or_default(), limits)?;
    let mut content_length = None;
    for field in &head.fields {
        if field.known == Some(Known::ContentLength) {
            if content_length.is_some() {
                return Err(ParseError::DuplicateHeader {
                    name: Known::ContentLength.name(),
                });
            }
            let n = grammar::digits_u32(&field.value).ok_or(ParseError::InvalidHeader {
                name: Known::ContentLength.name(),
                line: field.line,
                reason: "not a non-negative 32-bit number",
            })?;
            content_length = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
    let content_length = content_length.ok_or(ParseError::MissingContentLength)?;
    let len = head_len.saturating_add(content_length);
    if len > limits.max_message_len {
        return Err(ParseError::TooLarge {
            len,
            limit: limits.max_message_len,
        });
    }
    if buf.len() - start < len {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message { start, len })
}
