//! Tests of the batch codec: shapes, Google's documented example, every fault, and property
//! tests against hostile bodies (no panic, output bounded by the input).

use proptest::prelude::*;

use super::*;

const CT: &str = "multipart/mixed; boundary=batch_b";

/// Bytes of everything `decode` copied out of the input.
fn output_bytes(d: &Decoded) -> usize {
    d.parts
        .iter()
        .map(|p| {
            p.body.len()
                + p.content_id.as_ref().map_or(0, String::len)
                + p.headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>()
        })
        .sum()
}

/// An answer as Google shapes it: one `application/http` part per response.
/// (content id, status, headers, body) of one answer part.
type Part<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], &'a [u8]);

fn answer(boundary: &str, parts: &[Part<'_>], eol: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, status, headers, body) in parts {
        out.extend_from_slice(
            format!(
                "--{boundary}{eol}Content-Type: application/http{eol}Content-ID: <response-{id}>{eol}{eol}HTTP/1.1 {status} X{eol}"
            )
            .as_bytes(),
        );
        for (n, v) in *headers {
            out.extend_from_slice(format!("{n}: {v}{eol}").as_bytes());
        }
        out.extend_from_slice(eol.as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(eol.as_bytes());
    }
    out.extend_from_slice(format!("--{boundary}--{eol}").as_bytes());
    out
}

/// An encoded request turned into the answer Google would give: each request line becomes
/// `HTTP/1.1 200 OK` and each Content-ID gains `response-`.
fn echo_answer(enc: &Encoded) -> Vec<u8> {
    let text = String::from_utf8(enc.body.clone()).unwrap();
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if line.ends_with(" HTTP/1.1\r\n") {
            out.push_str("HTTP/1.1 200 OK\r\n");
        } else if let Some(id) = line.strip_prefix("Content-ID: <") {
            out.push_str("Content-ID: <response-");
            out.push_str(id);
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

#[test]
fn encodes_google_shaped_parts() {
    let parts = [
        InnerRequest::insert("/calendar/v3/", "a@b.com", br#"{"id":"abc"}"#.to_vec()),
        InnerRequest::update("/calendar/v3", "a@b.com", "ev/1", b"{}".to_vec())
            .with_content_id("x-1")
            .with_header("If-Match", "\"7\""),
        InnerRequest::delete("/calendar/v3/", "primary", "abcde"),
    ];
    let quoted = encode_with_boundary(&parts, "a b?").unwrap();
    assert_eq!(quoted.content_type, "multipart/mixed; boundary=\"a b?\"");
    assert_eq!(
        decode(
            &quoted.content_type,
            &echo_answer(&quoted),
            &Limits::default()
        )
        .unwrap()
        .parts
        .len(),
        3
    );
    let enc = encode_with_boundary(&parts, "batch_b").unwrap();
    assert_eq!(enc.content_type, CT);
    let want = "--batch_b\r\nContent-Type: application/http\r\nContent-ID: <item-0>\r\n\r\n\
POST /calendar/v3/calendars/a%40b.com/events HTTP/1.1\r\n\
Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"id\":\"abc\"}\r\n\
--batch_b\r\nContent-Type: application/http\r\nContent-ID: <x-1>\r\n\r\n\
PUT /calendar/v3/calendars/a%40b.com/events/ev%2F1 HTTP/1.1\r\nIf-Match: \"7\"\r\n\
Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}\r\n\
--batch_b\r\nContent-Type: application/http\r\nContent-ID: <item-2>\r\n\r\n\
DELETE /calendar/v3/calendars/primary/events/abcde HTTP/1.1\r\n\r\n\r\n\
--batch_b--\r\n";
    assert_eq!(String::from_utf8(enc.body).unwrap(), want);
}

#[test]
fn encode_refuses_what_would_break_the_format() {
    let ins = || InnerRequest::insert("/calendar/v3/", "c", b"{}".to_vec());
    // The boundary occurs in a body.
    let tricky = InnerRequest::insert("/calendar/v3/", "c", b"\r\n--batch_b--\r\n".to_vec());
    assert_eq!(
        encode_with_boundary(std::slice::from_ref(&tricky), "batch_b"),
        Err(BatchError::InvalidBoundary)
    );
    // ...while the random boundary avoids it.
    let enc = encode(&[tricky]).unwrap();
    let d = decode(&enc.content_type, &echo_answer(&enc), &Limits::default()).unwrap();
    assert_eq!(d.parts[0].body, b"\r\n--batch_b--\r\n");
    for bad in ["", "a b ", "é", &"x".repeat(71)] {
        assert_eq!(
            encode_with_boundary(&[ins()], bad),
            Err(BatchError::InvalidBoundary)
        );
    }
    let auth = ins().with_header("Authorization", "Bearer secret-token");
    let err = encode(&[auth]).unwrap_err();
    assert!(matches!(err, BatchError::BadRequest { part: 0, .. }));
    assert!(!format!("{err} {err:?}").contains("secret-token"));
    assert!(encode(&[ins().with_header("X", "a\r\nInjected: 1")]).is_err());
    assert!(encode(&[ins().with_content_id("a>\r\n")]).is_err());
    let many = vec![ins(); MAX_CALLS + 1];
    assert_eq!(encode(&many), Err(BatchError::TooManyParts(MAX_CALLS)));
    assert!(encode(&vec![ins(); MAX_CALLS]).is_ok());
}

#[test]
fn round_trip_of_encoded_requests() {
    let parts: Vec<_> = (0..5)
        .map(|i| {
            InnerRequest::insert(
                "/calendar/v3/",
                "cal",
                format!("{{\"n\":{i}}}").into_bytes(),
            )
        })
        .collect();
    let enc = encode(&parts).unwrap();
    assert!(
        enc.content_type
            .starts_with("multipart/mixed; boundary=batch_")
    );
    let d = decode(&enc.content_type, &echo_answer(&enc), &Limits::default()).unwrap();
    assert!(!d.truncated);
    assert_eq!(d.parts.len(), 5);
    for (i, p) in d.parts.iter().enumerate() {
        assert_eq!(p.item_index(), Some(i));
        assert_eq!(p.status, 200);
        assert_eq!(p.header("content-length"), Some("7"));
        assert_eq!(p.body, format!("{{\"n\":{i}}}").into_bytes());
    }
}

/// The answer of Google's batch guide, as printed there (including its
/// `Content-Type application/json` line without a colon).
#[test]
fn decodes_the_guides_example() {
    let body = "--batch_foobarbaz\r
Content-Type: application/http\r
Content-ID: <response-item1:12930812@barnyard.example.com>\r
\r
HTTP/1.1 200 OK\r
Content-Type application/json\r
Content-Length: response_part_1_Content_Length\r
ETag: \"etag/pony\"\r
\r
{\r
  \"kind\": \"farm#animal\",\r
  \"etag\": \"etag/pony\",\r
  \"animalName\": \"pony\"\r
}\r
--batch_foobarbaz\r
Content-Type: application/http\r
Content-ID: <response-item2:12930812@barnyard.example.com>\r
\r
HTTP/1.1 200 OK\r
Content-Type: application/json\r
ETag: \"etag/sheep\"\r
\r
{\"kind\": \"farm#animal\", \"animalName\": \"sheep\"}\r
--batch_foobarbaz\r
Content-Type: application/http\r
Content-ID: <response-item3:12930812@barnyard.example.com>\r
\r
HTTP/1.1 304 Not Modified\r
ETag: \"etag/animals\"\r
\r
--batch_foobarbaz--\r
";
    let d = decode(
        "multipart/mixed; boundary=batch_foobarbaz",
        body.as_bytes(),
        &Limits::default(),
    )
    .unwrap();
    assert!(!d.truncated);
    let ids: Vec<_> = d
        .parts
        .iter()
        .map(|p| p.content_id.clone().unwrap())
        .collect();
    assert_eq!(ids[0], "item1:12930812@barnyard.example.com");
    assert_eq!(ids[2], "item3:12930812@barnyard.example.com");
    let statuses: Vec<_> = d.parts.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [200, 200, 304]);
    assert_eq!(d.parts[0].header("etag"), Some("\"etag/pony\""));
    assert_eq!(d.parts[0].header("content-type"), None);
    assert!(d.parts[0].body.starts_with(b"{\r\n  \"kind\""));
    assert!(d.parts[0].body.ends_with(b"\r\n}"));
    let sheep: serde_json::Value = serde_json::from_slice(&d.parts[1].body).unwrap();
    assert_eq!(sheep["animalName"], "sheep");
    assert!(d.parts[2].body.is_empty());
}

#[test]
fn per_part_faults_429_with_retry_after_and_409() {
    let err429 = br#"{"error":{"code":429,"errors":[{"reason":"rateLimitExceeded"}]}}"#;
    let err409 = br#"{"error":{"code":409,"errors":[{"reason":"duplicate"}]}}"#;
    let body = answer(
        "batch_b",
        &[
            (
                "item-0",
                200,
                &[("Content-Type", "application/json")],
                b"{}",
            ),
            ("item-1", 429, &[("Retry-After", "7")], err429),
            ("item-2", 409, &[], err409),
            ("item-3", 204, &[], b""),
        ],
        "\r\n",
    );
    let d = decode(CT, &body, &Limits::default()).unwrap();
    let s: Vec<_> = d.parts.iter().map(|p| (p.item_index(), p.status)).collect();
    assert_eq!(
        s,
        [
            (Some(0), 200),
            (Some(1), 429),
            (Some(2), 409),
            (Some(3), 204)
        ]
    );
    assert_eq!(d.parts[1].header("retry-after"), Some("7"));
    assert_eq!(d.parts[1].body, err429);
    assert_eq!(d.parts[2].body, err409);
}

#[test]
fn tolerates_lf_quotes_case_whitespace_preamble_and_epilogue() {
    let mut body = b"This is a preamble.\n\n".to_vec();
    body.extend(answer(
        "b=x y",
        &[("item-0", 200, &[("etag", "\"1\"")], b"{}")],
        "\n",
    ));
    body.extend_from_slice(b"epilogue\n--b--\n");
    let body = String::from_utf8(body)
        .unwrap()
        .replace(
            "Content-Type: application/http",
            "content-type:APPLICATION/HTTP ; x=1",
        )
        .replace("--b=x y\n", "--b=x y \t\n");
    let ct = r#"Multipart/Mixed ; charset=x; BOUNDARY="b=x\ y""#;
    let d = decode(ct, body.as_bytes(), &Limits::default()).unwrap();
    assert!(!d.truncated);
    assert_eq!(d.parts.len(), 1);
    assert_eq!(
        (d.parts[0].status, d.parts[0].header("ETag")),
        (200, Some("\"1\""))
    );
    assert_eq!(d.parts[0].body, b"{}");
    // A part without MIME headers, folded header lines.
    let bare = "--z\nHTTP/1.1 503 Service Unavailable\nX-A: 1\n  2\n\nbusy\n--z--";
    let d = decode(
        "multipart/mixed; boundary=z",
        bare.as_bytes(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        (d.parts[0].status, d.parts[0].content_id.clone()),
        (503, None)
    );
    assert_eq!(d.parts[0].header("x-a"), Some("1 2"));
    assert_eq!(d.parts[0].body, b"busy");
}

#[test]
fn a_cut_answer_keeps_the_parts_fully_received() {
    let body = answer(
        "batch_b",
        &[
            ("item-0", 200, &[], b"{\"a\":1}"),
            ("item-1", 200, &[], b"{\"b\":2}"),
        ],
        "\r\n",
    );
    // A part is whole once the next delimiter line is in, with its line break; the answer
    // is whole once the closing `--batch_b--` is (its line break is optional).
    let second = 1 + body[1..]
        .windows(9)
        .position(|w| w == b"--batch_b")
        .unwrap();
    let close = body.windows(9).rposition(|w| w == b"--batch_b").unwrap();
    for cut in 0..=body.len() {
        let d = decode(CT, &body[..cut], &Limits::default()).unwrap();
        let closed = cut >= close + 11;
        assert_eq!(d.truncated, !closed, "cut at {cut}");
        let want = if closed {
            2
        } else {
            usize::from(cut >= second + 11)
        };
        assert_eq!(d.parts.len(), want, "cut at {cut}");
        if let Some(p) = d.parts.first() {
            assert_eq!(
                (p.status, p.body.as_slice()),
                (200, b"{\"a\":1}".as_slice())
            );
        }
    }
    // Cut in the middle of the second part's body: the first part is whole.
    let mid = body.len() - 12;
    let d = decode(CT, &body[..mid], &Limits::default()).unwrap();
    assert!(d.truncated);
    assert_eq!(d.parts.len(), 1);
    assert_eq!(d.parts[0].body, b"{\"a\":1}");
    let d = decode(CT, &body, &Limits::default()).unwrap();
    assert_eq!((d.parts.len(), d.truncated), (2, false));
}

#[test]
fn structural_faults() {
    let l = Limits::default();
    let ok = answer("batch_b", &[("item-0", 200, &[], b"{}")], "\r\n");
    assert_eq!(
        decode("multipart/mixed", &ok, &l),
        Err(BatchError::MissingBoundary)
    );
    assert_eq!(
        decode("multipart/mixed; charset=x", &ok, &l),
        Err(BatchError::MissingBoundary)
    );
    assert_eq!(
        decode("multipart/mixed; boundary=", &ok, &l),
        Err(BatchError::InvalidBoundary)
    );
    assert_eq!(
        decode("multipart/mixed; boundary=\"ab", &ok, &l),
        Err(BatchError::InvalidBoundary)
    );
    assert_eq!(
        decode("text/html; charset=UTF-8", &ok, &l),
        Err(BatchError::NotMultipart)
    );
    assert_eq!(
        decode("application/json", b"{}", &l),
        Err(BatchError::NotMultipart)
    );
    assert_eq!(decode("", b"", &l), Err(BatchError::NotMultipart));
    // Garbage under a multipart Content-Type: no delimiter, so nothing was received.
    let d = decode(CT, b"<html>502 Bad Gateway</html>", &l).unwrap();
    assert_eq!((d.parts.len(), d.truncated), (0, true));
    // A part without a status line.
    let no_status = b"--batch_b\r\nContent-Type: application/http\r\n\r\n{}\r\n--batch_b--";
    assert_eq!(
        decode(CT, no_status, &l),
        Err(BatchError::MalformedPart {
            part: 0,
            what: "no HTTP status line"
        })
    );
    let bad_code = b"--batch_b\r\n\r\nHTTP/1.1 2000 OK\r\n\r\n--batch_b--";
    assert!(matches!(
        decode(CT, bad_code, &l),
        Err(BatchError::MalformedPart { .. })
    ));
    let not_http =
        b"--batch_b\r\nContent-Type: text/plain\r\n\r\nHTTP/1.1 200 OK\r\n\r\n--batch_b--";
    assert_eq!(
        decode(CT, not_http, &l),
        Err(BatchError::MalformedPart {
            part: 0,
            what: "not application/http"
        })
    );
    // A delimiter must be alone on its line.
    let d = decode(CT, b"x--batch_b\r\n--batch_bb\r\n--batch_b--", &l).unwrap();
    assert_eq!((d.parts.len(), d.truncated), (0, false));
}

#[test]
fn limits_are_enforced() {
    let small = Limits {
        max_parts: 2,
        max_header_lines: 3,
        max_header_line_len: 40,
    };
    let three = answer(
        "batch_b",
        &[
            ("a", 200, &[], b""),
            ("b", 200, &[], b""),
            ("c", 200, &[], b""),
        ],
        "\n",
    );
    assert_eq!(decode(CT, &three, &small), Err(BatchError::TooManyParts(2)));
    let headers: &[(&str, &str)] = &[("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")];
    let many = answer("batch_b", &[("a", 200, headers, b"")], "\n");
    assert!(matches!(
        decode(CT, &many, &small),
        Err(BatchError::MalformedPart {
            what: "too many header lines",
            ..
        })
    ));
    let long = "y".repeat(41);
    let long = answer("batch_b", &[("a", 200, &[("X", &long)], b"")], "\n");
    assert!(matches!(
        decode(CT, &long, &small),
        Err(BatchError::MalformedPart {
            what: "header line too long",
            ..
        })
    ));
}

/// A long hostile input (many short lines, many delimiters, one huge line) decodes quickly.
#[test]
fn long_inputs_stay_linear() {
    let l = Limits::default();
    let started = std::time::Instant::now();
    let lines = "--batch_\n".repeat(200_000);
    let _ = decode(CT, lines.as_bytes(), &l);
    let delims = "--batch_b\n".repeat(200_000);
    assert_eq!(
        decode(CT, delims.as_bytes(), &l),
        Err(BatchError::MalformedPart {
            part: 0,
            what: "no HTTP status line"
        })
    );
    let parts = "--batch_b\nHTTP/1.1 200 OK\n\n".repeat(100_000);
    assert_eq!(
        decode(CT, parts.as_bytes(), &l),
        Err(BatchError::TooManyParts(MAX_CALLS))
    );
    let huge = vec![b'-'; 2_000_000];
    let _ = decode(CT, &huge, &l);
    let mut one = b"--batch_b\nHTTP/1.1 200 OK\n\n".to_vec();
    one.extend(std::iter::repeat_n(b'x', 2_000_000));
    let d = decode(CT, &one, &l).unwrap();
    assert_eq!((d.parts.len(), d.truncated), (0, true));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

fn valid_answer() -> Vec<u8> {
    answer(
        "batch_b",
        &[
            ("item-0", 200, &[("ETag", "\"1\"")], br#"{"id":"a"}"#),
            ("item-1", 429, &[("Retry-After", "3")], br#"{"error":{}}"#),
            ("item-2", 204, &[], b""),
        ],
        "\r\n",
    )
}

/// Every truncation, and every position overwritten with bytes that matter to the format.
#[test]
fn every_truncation_and_byte_flip_of_a_valid_answer() {
    let valid = valid_answer();
    for cut in 0..=valid.len() {
        check(CT, &valid[..cut]).unwrap();
    }
    for at in 0..valid.len() {
        for byte in [b'\n', b'\r', b'-', b':', b' ', 0, 0xff] {
            let mut v = valid.clone();
            v[at] = byte;
            check(CT, &v).unwrap();
        }
    }
}

/// Decodes and checks the invariants every input must keep.
fn check(ct: &str, input: &[u8]) -> Result<(), TestCaseError> {
    let l = Limits::default();
    if let Ok(d) = decode(ct, input, &l) {
        prop_assert!(output_bytes(&d) <= input.len());
        prop_assert!(d.parts.len() <= l.max_parts);
        prop_assert!(d.parts.iter().all(|p| (100..600).contains(&p.status)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(CT, &input)?;
    }

    #[test]
    fn arbitrary_content_types_never_panic(ct in "\\PC{0,80}", quoted in "[ -~]{0,80}") {
        check(&ct, &valid_answer())?;
        check(&format!("multipart/mixed; boundary=\"{quoted}"), &valid_answer())?;
    }

    #[test]
    fn arbitrary_lines_near_the_format_never_panic(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("--batch_b".to_string()),
                Just("--batch_b--".to_string()),
                Just("HTTP/1.1 200 OK".to_string()),
                Just("Content-Type: application/http".to_string()),
                Just("Content-ID: <response-item-1>".to_string()),
                Just(String::new()),
                "[ -~]{0,20}",
            ],
            0..40,
        ),
        crlf in any::<bool>(),
    ) {
        let input = lines.join(if crlf { "\r\n" } else { "\n" });
        check(CT, input.as_bytes())?;
    }

    #[test]
    fn mutated_valid_answers_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        dup in any::<prop::sample::Index>(),
    ) {
        let valid = valid_answer();
        let mut input = valid.clone();
        for (at, byte) in &flips {
            let i = at.index(input.len());
            input[i] = *byte;
        }
        check(CT, &input)?;
        check(CT, &input[..cut.index(input.len() + 1)])?;
        // A delimiter duplicated at some line start.
        let starts: Vec<usize> = std::iter::once(0)
            .chain(valid.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i + 1))
            .collect();
        let at = starts[dup.index(starts.len())];
        let mut doubled = valid[..at].to_vec();
        doubled.extend_from_slice(b"--batch_b\r\n");
        doubled.extend_from_slice(&valid[at..]);
        check(CT, &doubled)?;
    }

}

proptest! {
    // Round trips cost more per case (JSON, regexes); a few hundred cover the shapes.
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn responses_round_trip(
        parts in proptest::collection::vec(
            (100u16..600, proptest::collection::vec(any::<u8>(), 0..200), "[a-zA-Z0-9-]{1,12}", "[ -~]{0,30}"),
            0..12,
        ),
        crlf in any::<bool>(),
    ) {
        // Bodies are anything but the delimiter (the sender checks that, as `encode` does).
        let boundary = "batch_Zq9";
        prop_assume!(parts.iter().all(|(_, b, _, _)| count(b, b"--batch_Zq9") == 0));
        // With LF-only lines a body ending in CR is ambiguous (CRLF before a delimiter is
        // the delimiter's); Google sends CRLF.
        prop_assume!(crlf || parts.iter().all(|(_, b, _, _)| b.last() != Some(&b'\r')));
        #[allow(clippy::type_complexity, reason = "test data, used once")]
        let owned: Vec<(String, u16, Vec<(&str, &str)>, &[u8])> = parts
            .iter()
            .enumerate()
            .map(|(i, (s, b, n, v))| (format!("item-{i}"), *s, vec![(n.as_str(), v.as_str())], b.as_slice()))
            .collect();
        let shaped: Vec<Part<'_>> = owned
            .iter()
            .map(|(id, s, h, b)| (id.as_str(), *s, h.as_slice(), *b))
            .collect();
        let input = answer(boundary, &shaped, if crlf { "\r\n" } else { "\n" });
        let d = decode(&format!("multipart/mixed; boundary=\"{boundary}\""), &input, &Limits::default()).unwrap();
        prop_assert!(!d.truncated);
        prop_assert_eq!(d.parts.len(), parts.len());
        for (i, (p, (s, b, n, v))) in d.parts.iter().zip(&parts).enumerate() {
            prop_assert_eq!(p.item_index(), Some(i));
            prop_assert_eq!(p.status, *s);
            prop_assert_eq!(&p.body, b);
            prop_assert_eq!(p.header(n), Some(v.trim()));
        }
    }

    #[test]
    fn encoded_requests_round_trip(
        items in proptest::collection::vec(("\\PC{0,20}", "[a-v0-9]{5,12}", "\\PC{0,60}"), 1..10),
    ) {
        let parts: Vec<InnerRequest> = items
            .iter()
            .map(|(cal, id, summary)| {
                let json = serde_json::json!({ "id": id, "summary": summary }).to_string().into_bytes();
                InnerRequest::update("/calendar/v3/", cal, id, json)
            })
            .collect();
        let enc = encode(&parts).unwrap();
        let d = decode(&enc.content_type, &echo_answer(&enc), &Limits::default()).unwrap();
        prop_assert_eq!(d.parts.len(), parts.len());
        for (p, r) in d.parts.iter().zip(&parts) {
            prop_assert_eq!(Some(&p.body), r.json.as_ref());
            prop_assert!(r.path.bytes().all(|c| c.is_ascii_graphic()));
        }
    }
}

/// The library's request, through fake-google's batch endpoint (real HTTP), decoded by the
/// library: ids, statuses, Retry-After, and a cut answer.
#[tokio::test]
async fn the_fakes_answers_decode() {
    use fake_google::{FakeGoogle, Fault, FaultKind};
    let g = FakeGoogle::start().await;
    g.add_client("client", "secret");
    g.add_refresh_token("refresh", "client", "a@b.com");
    g.add_calendar("a@b.com");
    let token = g.issue_access_token("refresh").unwrap();
    let event = |id: &str| {
        serde_json::json!({
            "id": id, "summary": id,
            "start": {"dateTime": "2030-01-01T10:00:00Z"}, "end": {"dateTime": "2030-01-01T11:00:00Z"},
        })
        .to_string()
        .into_bytes()
    };
    let base = "/calendar/v3/";
    let send = |parts: Vec<InnerRequest>| {
        let (url, token) = (format!("{}batch/calendar/v3", g.root_url()), token.clone());
        async move {
            let enc = encode(&parts).unwrap();
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", enc.content_type)
                .body(enc.body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
            decode(&ct, &resp.bytes().await.unwrap(), &Limits::default()).unwrap()
        }
    };
    g.inject(
        Fault::new(FaultKind::TooManyRequests {
            retry_after: Some(3),
        })
        .path("/events/evtb2"),
    );
    let d = send(vec![
        InnerRequest::insert(base, "a@b.com", event("evtb1")),
        InnerRequest::update(base, "a@b.com", "evtb2", event("evtb2")),
        InnerRequest::insert(base, "a@b.com", event("evtb1")),
        InnerRequest::delete(base, "a@b.com", "evtb1"),
    ])
    .await;
    assert!(!d.truncated);
    let got: Vec<_> = d.parts.iter().map(|p| (p.item_index(), p.status)).collect();
    assert_eq!(
        got,
        [
            (Some(0), 200),
            (Some(1), 429),
            (Some(2), 409),
            (Some(3), 204)
        ]
    );
    assert_eq!(d.parts[1].header("Retry-After"), Some("3"));
    let created: serde_json::Value = serde_json::from_slice(&d.parts[0].body).unwrap();
    assert_eq!(created["id"], "evtb1");

    g.inject(Fault::new(FaultKind::BatchCut { after_parts: 1 }).path("/batch"));
    let d = send(vec![
        InnerRequest::insert(base, "a@b.com", event("evtb3")),
        InnerRequest::insert(base, "a@b.com", event("evtb4")),
    ])
    .await;
    assert!(d.truncated);
    assert_eq!(d.parts.len(), 1);
    assert_eq!((d.parts[0].item_index(), d.parts[0].status), (Some(0), 200));
    assert_eq!(
        g.live_events("a@b.com").len(),
        2,
        "evtb3 and evtb4: the cut part was made too"
    );
}
