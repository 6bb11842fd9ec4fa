//! The two encodings of protocol messages, behind one pair of functions so the binary codec can be
//! swapped (bincode 2 is unmaintained) without touching the message types.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Encoding, UNKNOWN_REQUEST_ID};

/// A message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Bytes that are not a valid bincode encoding of the expected message.
    #[error("invalid bincode: {0}")]
    Bincode(String),
    /// Text that is not a valid JSON encoding of the expected message.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Bounds what a hostile frame can make the decoder allocate: a string at most four frames' worth
/// (bincode allocates a claimed length before reading it), a list's first allocation at serde's
/// cap on size hints (1 MiB); either is freed as soon as the frame proves shorter.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ crate::DEFAULT_MAX_FRAME_BYTES * 4 }>()
}

/// Decodes bincode under a limit that grows with the message. Bincode counts against its limit
/// what the whole message takes in memory (a string's claimed length before reading it, eight
/// bytes for a one-byte varint), so a fixed limit sized for requests refused the server's larger
/// replies (a full chat history page is about 400 KB, PROTOCOL.md §7). A frame of up to
/// [`crate::DEFAULT_MAX_FRAME_BYTES`] keeps [`bincode_config`]'s limit; a larger one may take
/// eight times the largest size of its tier (1 MiB, then 64 MiB, a client's usual cap).
fn decode_bincode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    const FRAME: usize = crate::DEFAULT_MAX_FRAME_BYTES;
    const MEDIUM: usize = 16 * FRAME;
    const LARGE: usize = 1024 * FRAME;
    let standard = bincode::config::standard();
    if bytes.len() <= FRAME {
        bincode::serde::decode_from_slice(bytes, bincode_config())
    } else if bytes.len() <= MEDIUM {
        bincode::serde::decode_from_slice(bytes, standard.with_limit::<{ MEDIUM * 8 }>())
    } else {
        bincode::serde::decode_from_slice(bytes, standard.with_limit::<{ LARGE * 8 }>())
    }
}

/// Bincode messages up to this size are encoded on the stack first.
const ENCODE_ON_STACK_BYTES: usize = 256;

/// Encodes `message` in `encoding`: bincode bytes, or JSON text as UTF-8 bytes. Bincode bytes
/// come in a vector whose capacity is its length.
///
/// # Errors
/// Only if serde refuses the value, which the protocol's types never do.
pub fn encode<T: Serialize>(encoding: Encoding, message: &T) -> Result<Vec<u8>, CodecError> {
    match encoding {
        Encoding::Bincode => {
            // Most messages are a few dozen bytes. Encoded onto the stack and then copied, they
            // take one allocation of exactly their size; encoding into a growing vector took two
            // or three, and its spare capacity cost the frame another (`Bytes` from a vector
            // whose length is not its capacity allocates a header).
            let mut stack = [0_u8; ENCODE_ON_STACK_BYTES];
            match bincode::serde::encode_into_slice(message, &mut stack, bincode_config()) {
                Ok(len) => Ok(stack[..len].to_vec()),
                Err(bincode::error::EncodeError::UnexpectedEnd) => {
                    let mut bytes = bincode::serde::encode_to_vec(message, bincode_config())
                        .map_err(|error| CodecError::Bincode(error.to_string()))?;
                    bytes.shrink_to_fit();
                    Ok(bytes)
                }
                Err(error) => Err(CodecError::Bincode(error.to_string())),
            }
        }
        Encoding::Json => Ok(serde_json::to_vec(message)?),
    }
}

/// Decodes one whole message; trailing bytes are an error.
///
/// # Errors
/// [`CodecError`] when the bytes are not exactly one valid message.
pub fn decode<T: DeserializeOwned>(encoding: Encoding, bytes: &[u8]) -> Result<T, CodecError> {
    match encoding {
        Encoding::Bincode => {
            let (message, read) =
                decode_bincode(bytes).map_err(|error| CodecError::Bincode(error.to_string()))?;
            if read != bytes.len() {
                return Err(CodecError::Bincode(format!("{} trailing bytes", bytes.len() - read)));
            }
            Ok(message)
        }
        Encoding::Json => Ok(serde_json::from_slice(bytes)?),
    }
}

/// Reads just the request id of a client frame that failed to decode, so the error response can
/// still carry it; [`UNKNOWN_REQUEST_ID`] when even that is unreadable.
pub fn peek_request_id(encoding: Encoding, bytes: &[u8]) -> u64 {
    match encoding {
        // The id is the first field of `ClientMessage`, so it is the leading varint.
        Encoding::Bincode => bincode::serde::decode_from_slice::<u64, _>(bytes, bincode_config())
            .map_or(UNKNOWN_REQUEST_ID, |(id, _)| id),
        Encoding::Json => {
            #[derive(serde::Deserialize)]
            struct IdOnly {
                id: u64,
            }
            serde_json::from_slice::<IdOnly>(bytes).map_or(UNKNOWN_REQUEST_ID, |only| only.id)
        }
    }
}

/// Reads just the request id of a server frame that failed to decode, if it is a response, so a
/// client can fail that one request (a newer server's error code, say) rather than leave it
/// waiting; `None` for events and for frames too broken to tell.
pub fn peek_response_id(encoding: Encoding, bytes: &[u8]) -> Option<u64> {
    match encoding {
        // `ServerMessage::Response` is variant 0, and the id is the first field of `Response`.
        Encoding::Bincode => {
            match bincode::serde::decode_from_slice::<(u32, u64), _>(bytes, bincode_config()) {
                Ok(((0, id), _)) => Some(id),
                _ => None,
            }
        }
        Encoding::Json => {
            #[derive(serde::Deserialize)]
            struct IdOnly {
                id: u64,
            }
            #[derive(serde::Deserialize)]
            struct ResponseOnly {
                response: IdOnly,
            }
            serde_json::from_slice::<ResponseOnly>(bytes).ok().map(|only| only.response.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::{AccountId, ClientMessage, Outcome, Reply, Request, Response, ServerMessage, chat};

    #[test]
    fn the_id_of_an_unknown_request_can_still_be_read() {
        assert_eq!(peek_request_id(Encoding::Json, br#"{"id":9,"request":"teleport"}"#), 9);
        assert_eq!(peek_request_id(Encoding::Json, b"not json"), UNKNOWN_REQUEST_ID);
        let mut bytes =
            encode(Encoding::Bincode, &ClientMessage { id: 300, request: Request::Ping }).expect("encode");
        // Corrupt the variant index that follows the id.
        let last = bytes.len() - 1;
        bytes[last] = 200;
        assert!(decode::<ClientMessage>(Encoding::Bincode, &bytes).is_err());
        assert_eq!(peek_request_id(Encoding::Bincode, &bytes), 300);
    }

    #[test]
    fn the_id_of_an_undecodable_response_can_still_be_read() {
        let unknown_code = br#"{"response":{"id":9,"outcome":{"error":{"code":"teapot","message":"no"}}}}"#;
        assert!(decode::<ServerMessage>(Encoding::Json, unknown_code).is_err());
        assert_eq!(peek_response_id(Encoding::Json, unknown_code), Some(9));
        assert_eq!(peek_response_id(Encoding::Json, br#"{"event":{"teleported":{}}}"#), None);
        let unknown_code = [0x00, 0xfb, 0x2c, 0x01, 0x01, 0x08, 0x02, b'n', b'o'];
        assert!(decode::<ServerMessage>(Encoding::Bincode, &unknown_code).is_err());
        assert_eq!(peek_response_id(Encoding::Bincode, &unknown_code), Some(300));
        assert_eq!(peek_response_id(Encoding::Bincode, &[0x01, 0x09, 0x00]), None);
    }

    #[test]
    fn messages_on_either_side_of_the_stack_buffer_encode_to_exactly_their_bytes() {
        for password_len in [1, ENCODE_ON_STACK_BYTES - 20, ENCODE_ON_STACK_BYTES, 10 * ENCODE_ON_STACK_BYTES]
        {
            let message = ClientMessage {
                id: 7,
                request: Request::Login { username: "ada".into(), password: "p".repeat(password_len) },
            };
            let bytes = encode(Encoding::Bincode, &message).expect("encode");
            let plain = bincode::serde::encode_to_vec(&message, bincode_config()).expect("encode");
            assert_eq!(bytes, plain, "password of {password_len} bytes");
            assert_eq!(bytes.capacity(), bytes.len(), "password of {password_len} bytes");
            assert_eq!(decode::<ClientMessage>(Encoding::Bincode, &bytes).expect("decode"), message);
        }
    }

    #[test]
    fn a_reply_far_larger_than_a_request_frame_decodes_in_both_encodings() {
        // A full history page of four-byte characters: about 400 KB, as PROTOCOL.md §7 says
        // replies can be.
        let message = chat::ChatMessage {
            message_id: chat::MessageId(Uuid::from_u128(1)),
            channel_id: chat::ChannelId(Uuid::from_u128(2)),
            sender: AccountId(Uuid::from_u128(3)),
            text: "\u{1F600}".repeat(chat::TEXT_MAX_CHARS),
            sent_at_ms: 1_764_633_600_123,
        };
        let page = chat::HistoryPage {
            channel_id: message.channel_id,
            messages: vec![message; chat::PAGE_MAX_MESSAGES as usize],
            next_before: None,
            archived: false,
        };
        let reply = ServerMessage::Response(Response {
            id: 1,
            outcome: Outcome::Ok(Reply::Chat(chat::ChatReply::History(page))),
        });
        for encoding in [Encoding::Bincode, Encoding::Json] {
            let bytes = encode(encoding, &reply).expect("encode");
            assert!(bytes.len() > 400_000, "{encoding:?}: {} bytes", bytes.len());
            assert_eq!(decode::<ServerMessage>(encoding, &bytes).expect("decode"), reply, "{encoding:?}");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes =
            encode(Encoding::Bincode, &ClientMessage { id: 1, request: Request::Ping }).expect("encode");
        bytes.push(0);
        assert!(decode::<ClientMessage>(Encoding::Bincode, &bytes).is_err());
    }
}
