//! Property tests: `decode(encode(p)) == p` for generated packets of every kind in every version
//! (each version gets only what it can carry), and decode of arbitrary bytes never panics and, when
//! it succeeds, re-encodes to a frame that decodes to the same packet.

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use super::*;

fn string() -> impl Strategy<Value = ByteString> {
    "[^\u{0}]{0,6}".prop_map(ByteString::from)
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    "[^\u{0}+#]{1,8}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..8).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = UserProperties> {
    vec((string(), string()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| PacketId::new(id).unwrap())
}

fn var_int() -> impl Strategy<Value = u32> {
    1..=VAR_INT_MAX
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (
            of(any::<u32>()),
            of(1..=u16::MAX),
            of(1..=u32::MAX),
            of(any::<u16>()),
        ),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            users(),
            of(string()),
            of(binary()),
        ),
    )
        .prop_map(
            |((expiry, receive, size, aliases), (response, problem, user, method, data))| {
                ConnectProperties {
                    session_expiry_interval_secs: expiry,
                    receive_maximum: receive,
                    maximum_packet_size: size,
                    topic_alias_maximum: aliases,
                    request_response_information: response,
                    request_problem_information: problem,
                    user_properties: user,
                    authentication_data: if method.is_some() { data } else { None },
                    authentication_method: method,
                }
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        of(any::<bool>()),
        of(any::<u32>()),
        of(string()),
        of(topic_name()),
        of(binary()),
        users(),
    )
        .prop_map(
            |(delay, format, expiry, content, response, correlation, user)| WillProperties {
                will_delay_interval_secs: delay,
                payload_format_indicator: format,
                message_expiry_interval_secs: expiry,
                content_type: content,
                response_topic: response,
                correlation_data: correlation,
                user_properties: user,
            },
        )
}

fn connect(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(),
    )
        .prop_map(move |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 {
                properties
            } else {
                WillProperties::default()
            },
        });
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        of(will),
        of(string()),
        of(binary()),
        connect_properties(),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive_secs,
                client_id,
                will,
                username,
                password,
                properties,
            )| {
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    version,
                    clean_start,
                    keep_alive_secs,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v5 {
                        properties
                    } else {
                        ConnectProperties::default()
                    },
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let first = (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(0..=1u8),
        of(any::<bool>()),
        of(1..=u32::MAX),
        of(string()),
        of(any::<u16>()),
        of(string()),
    );
    let second = (
        users(),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(string()),
        of(string()),
        of(string()),
        of(binary()),
    );
    (first, second).prop_map(|(a, b)| ConnAckProperties {
        session_expiry_interval_secs: a.0,
        receive_maximum: a.1,
        maximum_qos: a.2,
        retain_available: a.3,
        maximum_packet_size: a.4,
        assigned_client_identifier: a.5,
        topic_alias_maximum: a.6,
        reason_string: a.7,
        user_properties: b.0,
        wildcard_subscription_available: b.1,
        subscription_identifiers_available: b.2,
        shared_subscription_available: b.3,
        server_keep_alive_secs: b.4,
        response_information: b.5,
        server_reference: b.6,
        authentication_method: b.7,
        authentication_data: b.8,
    })
}

fn connack(version: Version) -> BoxedStrategy<Packet> {
    if version.is_v5() {
        (any::<bool>(), any::<u8>(), connack_properties())
            .prop_map(|(session_present, reason, properties)| {
                Packet::ConnAck(Box::new(ConnAck {
                    session_present,
                    reason: ReasonCode(reason),
                    properties,
                }))
            })
            .boxed()
    } else {
        (
            any::<bool>(),
            prop::sample::select(vec![0x00u8, 0x84, 0x85, 0x88, 0x86, 0x87]),
        )
            .prop_map(move |(session_present, reason)| {
                Packet::ConnAck(Box::new(ConnAck {
                    // 3.1 has no Session Present flag: its byte is reserved.
                    session_present: session_present && version != Version::V3_1,
                    reason: ReasonCode(reason),
                    properties: Default::default(),
                }))
            })
            .boxed()
    }
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        of(any::<bool>()),
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(topic_name()),
        of(binary()),
        users(),
        vec(var_int(), 0..3),
        of(string()),
    )
        .prop_map(
            |(format, expiry, alias, response, correlation, user, ids, content)| {
                PublishProperties {
                    payload_format_indicator: format,
                    message_expiry_interval_secs: expiry,
                    topic_alias: alias,
                    response_topic: response,
                    correlation_data: correlation,
                    user_properties: user,
                    subscription_identifiers: ids,
                    content_type: content,
                }
            },
        )
}

fn publish(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        publish_properties(),
        binary(),
        any::<bool>(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, id, properties, payload, alias_only)| {
                let properties = if v5 {
                    properties
                } else {
                    PublishProperties::default()
                };
                let topic = if alias_only && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                let packet_id = (qos != QoS::AtMostOnce).then_some(id);
                Packet::Publish(Publish {
                    dup,
                    qos,
                    retain,
                    topic,
                    packet_id,
                    properties: properties.into(),
                    payload,
                })
            },
        )
}

fn ack_properties(version: Version) -> impl Strategy<Value = AckProperties> {
    let v5 = version.is_v5();
    (of(string()), users()).prop_map(move |(reason_string, user_properties)| {
        if v5 {
            AckProperties {
                reason_string,
                user_properties,
            }
        } else {
            AckProperties::default()
        }
    })
}

fn reason(version: Version) -> impl Strategy<Value = ReasonCode> {
    let v5 = version.is_v5();
    any::<u8>().prop_map(move |code| {
        if v5 {
            ReasonCode(code)
        } else {
            ReasonCode::SUCCESS
        }
    })
}

fn pub_response(version: Version) -> impl Strategy<Value = Packet> {
    (
        0..4u8,
        packet_id(),
        reason(version),
        ack_properties(version),
    )
        .prop_map(|(kind, packet_id, reason, properties)| {
            let response = PubResponse {
                packet_id,
                reason,
                properties,
            };
            match kind {
                0 => Packet::PubAck(response),
                1 => Packet::PubRec(response),
                2 => Packet::PubRel(response),
                _ => Packet::PubComp(response),
            }
        })
}

fn subscribe(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let handling = prop_oneof![
        Just(RetainHandling::OnSubscribe),
        Just(RetainHandling::OnNewSubscription),
        Just(RetainHandling::Never)
    ];
    let options = (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, no_local, rap, handling)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: rap,
                    retain_handling: handling,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                }
            }
        },
    );
    let filters = vec(
        (string(), options).prop_map(|(filter, options)| SubscribeFilter { filter, options }),
        1..4,
    );
    (packet_id(), of(var_int()), users(), filters).prop_map(
        move |(packet_id, id, user, filters)| {
            let properties = if v5 {
                SubscribeProperties {
                    subscription_identifier: id,
                    user_properties: user,
                }
            } else {
                SubscribeProperties::default()
            };
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        },
    )
}

fn acks_with_codes(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let suback_code = if v5 {
        any::<u8>().boxed()
    } else {
        prop::sample::select(vec![0u8, 1, 2, 0x80]).boxed()
    };
    let suback = (packet_id(), ack_properties(version), vec(suback_code, 0..4)).prop_map(
        |(packet_id, properties, codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons: codes.into_iter().map(ReasonCode).collect(),
            })
        },
    );
    let unsuback = (packet_id(), ack_properties(version), vec(any::<u8>(), 0..4)).prop_map(
        move |(packet_id, properties, codes)| {
            let reasons = if v5 {
                codes.into_iter().map(ReasonCode).collect()
            } else {
                Vec::new()
            };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons,
            })
        },
    );
    let unsubscribe =
        (packet_id(), users(), vec(string(), 1..4)).prop_map(move |(packet_id, user, filters)| {
            let properties = UnsubscribeProperties {
                user_properties: if v5 { user } else { Vec::new() },
            };
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        });
    prop_oneof![suback, unsuback, unsubscribe]
}

fn control(version: Version) -> BoxedStrategy<Packet> {
    let simple = prop_oneof![Just(Packet::PingReq), Just(Packet::PingResp)];
    if !version.is_v5() {
        return prop_oneof![simple, Just(Packet::Disconnect(Disconnect::default()))].boxed();
    }
    let disconnect = (
        any::<u8>(),
        of(any::<u32>()),
        of(string()),
        users(),
        of(string()),
    )
        .prop_map(
            |(reason, expiry, reason_string, user_properties, server_reference)| {
                Packet::Disconnect(Disconnect {
                    reason: ReasonCode(reason),
                    properties: DisconnectProperties {
                        session_expiry_interval_secs: expiry,
                        reason_string,
                        user_properties,
                        server_reference,
                    },
                })
            },
        );
    let auth = (
        any::<u8>(),
        of(string()),
        of(binary()),
        of(string()),
        users(),
    )
        .prop_map(|(reason, method, data, reason_string, user_properties)| {
            Packet::Auth(Box::new(Auth {
                reason: ReasonCode(reason),
                properties: AuthProperties {
                    authentication_data: if method.is_some() { data } else { None },
                    authentication_method: method,
                    reason_string,
                    user_properties,
                },
            }))
        });
    prop_oneof![simple, disconnect, auth].boxed()
}

fn packet(version: Version) -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        pub_response(version),
        subscribe(version),
        acks_with_codes(version),
        control(version),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::V3_1),
        Just(Version::V3_1_1),
        Just(Version::V5)
    ]
}

fn check_roundtrip(packet: &Packet, version: Version) -> Result<(), TestCaseError> {
    let bytes = encode_to_vec(packet, version);
    prop_assert_eq!(&decode_all(&bytes, version), &Ok(packet.clone()));
    Ok(())
}

/// Decodes arbitrary bytes; whatever decodes must encode and decode to the same packet.
fn check_arbitrary(bytes: &[u8], version: Version) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 16) {
        let mut encoded = BytesMut::new();
        encode(&packet, version, &mut encoded, usize::MAX)
            .map_err(|error| TestCaseError::fail(format!("{error}")))?;
        let again = decode(&mut encoded, version, usize::MAX);
        prop_assert_eq!(again, Ok(Some(packet)));
        prop_assert!(encoded.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn roundtrip_3_1(packet in packet(Version::V3_1)) {
        check_roundtrip(&packet, Version::V3_1)?;
    }

    #[test]
    fn roundtrip_3_1_1(packet in packet(Version::V3_1_1)) {
        check_roundtrip(&packet, Version::V3_1_1)?;
    }

    #[test]
    fn roundtrip_5(packet in packet(Version::V5)) {
        check_roundtrip(&packet, Version::V5)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64), version in version()) {
        check_arbitrary(&bytes, version)?;
    }

    /// Valid fixed headers and lengths over random bodies reach deeper than random bytes.
    #[test]
    fn random_bodies_never_panic(kind in 1..16u8, flags in 0..16u8, body in vec(any::<u8>(), 0..48), version in version()) {
        let first = (kind << 4) | if matches!(kind, 6 | 8 | 10) { 0b0010 } else if kind == 3 { flags } else { 0 };
        let bytes = [&[first, body.len() as u8][..], &body].concat();
        check_arbitrary(&bytes, version)?;
    }

    /// Spec vectors with one byte changed: close to valid, so mostly past the first checks.
    #[test]
    fn mutated_vectors_never_panic(index in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let vectors = super::vectors::all();
        let (version, mut bytes, _) = index.get(&vectors).clone();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        check_arbitrary(&bytes, version)?;
    }
}
