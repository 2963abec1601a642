//! Tests of the netstring and JSON framing codecs.

use super::*;

fn decode_all(codec: &mut NetstringCodec, input: &[u8]) -> Result<Vec<Bytes>, NetstringError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn one_frame() {
    let mut c = NetstringCodec::default();
    assert_eq!(
        decode_all(&mut c, b"5:hello,").unwrap(),
        vec![Bytes::from_static(b"hello")]
    );
}

#[test]
fn decode_slice_in_place() {
    let c = NetstringCodec::new(8);
    let wire = b"3:abc,\r\n0:,1";
    assert_eq!(c.decode_slice(wire).unwrap(), Some((&b"abc"[..], 6)));
    assert_eq!(c.decode_slice(&wire[6..]).unwrap(), Some((&b""[..], 5)));
    // Incomplete: the prefix, the data, or the comma still to come.
    assert_eq!(c.decode_slice(&wire[11..]).unwrap(), None);
    assert_eq!(c.decode_slice(b"3:ab").unwrap(), None);
    assert_eq!(c.decode_slice(b"3:abc").unwrap(), None);
    assert_eq!(c.decode_slice(b" \n").unwrap(), None);
    assert!(matches!(
        c.decode_slice(b"3:abcd"),
        Err(NetstringError::MissingComma {
            len: 3,
            found: b'd'
        })
    ));
    assert!(matches!(
        c.decode_slice(b"123"),
        Err(NetstringError::FrameTooLarge {
            len: 12,
            max: 8,
            ..
        })
    ));
    assert!(matches!(
        c.decode_slice(b"01:a,"),
        Err(NetstringError::LeadingZero)
    ));
    assert!(matches!(
        c.decode_slice(b"x"),
        Err(NetstringError::BadLengthByte(b'x'))
    ));
}

#[test]
fn data_may_contain_commas_and_colons() {
    let mut c = NetstringCodec::default();
    let got = decode_all(&mut c, b"12:{\"a\":1,\"b\":2,3:x,y,").unwrap();
    assert_eq!(
        got,
        vec![
            Bytes::from_static(b"{\"a\":1,\"b\":2"),
            Bytes::from_static(b"x,y")
        ]
    );
}

#[test]
fn merged_frames_and_white_space_between() {
    let mut c = NetstringCodec::default();
    let got = decode_all(&mut c, b"1:a,\r\n 2:bc,\t3:def,\n").unwrap();
    assert_eq!(got, vec!["a", "bc", "def"]);
}

#[test]
fn empty_frame_is_keepalive() {
    let mut c = NetstringCodec::default();
    let got = decode_all(&mut c, b"0:,0:,1:x,").unwrap();
    assert_eq!(got, vec!["", "", "x"]);
}

#[test]
fn split_at_every_byte() {
    let input = b"5:hello, 11:hello world,0:,3:a,b,";
    let expect = vec!["hello", "hello world", "", "a,b"];
    for split in 0..=input.len() {
        let mut c = NetstringCodec::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in [&input[..split], &input[split..]] {
            buf.extend_from_slice(part);
            while let Some(f) = c.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, expect, "split at {split}");
    }
}

#[test]
fn one_byte_at_a_time() {
    let input = b"5:hello, 11:hello world,0:,3:a,b,";
    let mut c = NetstringCodec::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in input {
        buf.extend_from_slice(&[*b]);
        while let Some(f) = c.decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, vec!["hello", "hello world", "", "a,b"]);
    assert!(buf.is_empty());
}

#[test]
fn huge_length_is_refused_before_data() {
    let mut c = NetstringCodec::new(1024 * 1024);
    let err = decode_all(&mut c, b"2147483640:A").unwrap_err();
    assert!(
        matches!(
            err,
            NetstringError::FrameTooLarge {
                partial: true,
                max: 1048576,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn overflowing_length_is_refused() {
    // 30 digits would overflow any integer type; the limit stops it first.
    let mut c = NetstringCodec::new(usize::MAX);
    let err = decode_all(&mut c, b"999999999999999999999999999999:").unwrap_err();
    assert!(matches!(err, NetstringError::FrameTooLarge { .. }), "{err}");
    let mut c = NetstringCodec::new(100);
    let err = decode_all(&mut c, b"0000000000000000001:").unwrap_err();
    assert!(matches!(err, NetstringError::LeadingZero), "{err}");
}

#[test]
fn limit_is_inclusive() {
    let mut c = NetstringCodec::new(3);
    assert_eq!(decode_all(&mut c, b"3:abc,").unwrap(), vec!["abc"]);
    let err = decode_all(&mut c, b"4:abcd,").unwrap_err();
    assert!(
        matches!(err, NetstringError::FrameTooLarge { len: 4, max: 3, .. }),
        "{err}"
    );
}

#[test]
fn ten_digit_prefix_is_refused() {
    let mut c = NetstringCodec::default();
    let err = decode_all(&mut c, b"1234567890:").unwrap_err();
    assert!(matches!(err, NetstringError::FrameTooLarge { .. }), "{err}");
}

#[test]
fn malformed_cases() {
    type Check = fn(&NetstringError) -> bool;
    let cases: &[(&[u8], Check)] = &[
        (b"x", |e| matches!(e, NetstringError::BadLengthByte(b'x'))),
        (b":5,", |e| matches!(e, NetstringError::BadLengthByte(b':'))),
        (b"-1:a,", |e| {
            matches!(e, NetstringError::BadLengthByte(b'-'))
        }),
        (b"5x:hello,", |e| {
            matches!(e, NetstringError::BadLengthDigit(b'x'))
        }),
        (b"5 :hello,", |e| {
            matches!(e, NetstringError::BadLengthDigit(b' '))
        }),
        (b"05:hello,", |e| matches!(e, NetstringError::LeadingZero)),
        (b"00:,", |e| matches!(e, NetstringError::LeadingZero)),
        (b"5:hello;", |e| {
            matches!(
                e,
                NetstringError::MissingComma {
                    len: 5,
                    found: b';'
                }
            )
        }),
        (b"3:hello,", |e| {
            matches!(
                e,
                NetstringError::MissingComma {
                    len: 3,
                    found: b'l'
                }
            )
        }),
        (b"1:a,garbage", |e| {
            matches!(e, NetstringError::BadLengthByte(b'g'))
        }),
    ];
    for (input, check) in cases {
        let mut c = NetstringCodec::default();
        let err = decode_all(&mut c, input).expect_err(&String::from_utf8_lossy(input));
        assert!(
            check(&err),
            "{:?} gave {err:?}",
            String::from_utf8_lossy(input)
        );
        // Every error can be shown to a user.
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn eof_inside_a_frame_is_an_error() {
    let mut c = NetstringCodec::default();
    let mut buf = BytesMut::from(&b"5:hel"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(matches!(
        c.decode_eof(&mut buf),
        Err(NetstringError::Truncated(3))
    ));
    let mut c = NetstringCodec::default();
    let mut buf = BytesMut::from(&b"1:a,\n "[..]);
    assert_eq!(c.decode_eof(&mut buf).unwrap().unwrap(), "a");
    assert!(c.decode_eof(&mut buf).unwrap().is_none());
}

#[test]
fn encode_round_trip() {
    let mut c = NetstringCodec::default();
    let mut out = BytesMut::new();
    c.encode(b"hello", &mut out).unwrap();
    c.encode(b"", &mut out).unwrap();
    c.encode("a,b:c", &mut out).unwrap();
    assert_eq!(&out[..], b"5:hello,0:,5:a,b:c,");
    assert_eq!(
        decode_all(&mut c, &out).unwrap(),
        vec!["hello", "", "a,b:c"]
    );
    assert_eq!(NetstringCodec::frame(b"abc"), "3:abc,");
}

#[test]
fn head_digits() {
    for (len, head) in [(0, "0:"), (9, "9:"), (10, "10:"), (1234567, "1234567:")] {
        assert_eq!(NetstringHead::new(len).as_bytes(), head.as_bytes());
    }
    let max = NetstringHead::new(usize::MAX);
    assert_eq!(max.as_bytes(), format!("{}:", usize::MAX).as_bytes());
}

#[test]
fn raw_takes_what_is_there() {
    let mut c = RawCodec::new(4);
    let mut buf = BytesMut::from(&b"abcdef"[..]);
    assert_eq!(c.decode(&mut buf).unwrap().unwrap(), "abcd");
    assert_eq!(c.decode(&mut buf).unwrap().unwrap(), "ef");
    assert!(c.decode(&mut buf).unwrap().is_none());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..64) {
            let mut c = NetstringCodec::new(max);
            let mut buf = BytesMut::from(&input[..]);
            // Each call either makes progress, waits, or fails.
            for _ in 0..=input.len() {
                match c.decode(&mut buf) {
                    Ok(Some(f)) => prop_assert!(f.len() <= max),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn decode_slice_agrees_with_decoder(
            input in proptest::collection::vec(
                prop_oneof![Just(b'0'), Just(b'1'), Just(b'9'), Just(b':'), Just(b','), Just(b' '), Just(b'x')],
                0..64,
            ),
            max in 0usize..32,
        ) {
            let c = NetstringCodec::new(max);
            let mut by_decoder = Vec::new();
            let mut d = NetstringCodec::new(max);
            let mut buf = BytesMut::from(&input[..]);
            let decoder_err = loop {
                match d.decode(&mut buf) {
                    Ok(Some(f)) => by_decoder.push(f.to_vec()),
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            let mut by_slice = Vec::new();
            let mut at = 0;
            let slice_err = loop {
                match c.decode_slice(&input[at..]) {
                    Ok(Some((f, used))) => {
                        by_slice.push(f.to_vec());
                        at += used;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            prop_assert_eq!(by_slice, by_decoder);
            prop_assert_eq!(slice_err, decoder_err);
        }

        #[test]
        fn frames_survive_any_split(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode_netstring(f, &mut wire);
                wire.extend_from_slice(b"\r\n");
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort();
            let mut c = NetstringCodec::new(64);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                buf.extend_from_slice(&wire[w[0]..w[1]]);
                while let Some(f) = c.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert_eq!(got, frames);
        }
    }
}
