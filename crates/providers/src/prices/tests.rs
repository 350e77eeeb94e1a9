use time::macros::date;

use super::*;

#[test]
fn decimal_prices_parse_exactly() {
    let cases: &[(&str, Result<u64, ()>)] = &[
        ("2.50", Ok(2_500_000)),
        ("0.075", Ok(75_000)),
        ("0.000001", Ok(1)),
        ("15", Ok(15_000_000)),
        ("0.0000001", Err(())),
        ("-1", Err(())),
        ("1e3", Err(())),
        (".5", Err(())),
        ("", Err(())),
    ];
    for (text, expected) in cases {
        assert_eq!(
            parse_usd_per_million(text).map_err(|_| ()),
            *expected,
            "{text}"
        );
    }
}

#[test]
fn unit_prices_and_multipliers_parse_exactly() {
    assert_eq!(parse_usd_per_unit("0.040", "image"), Ok(40_000_000));
    assert_eq!(parse_usd_per_unit("0.000000001", "image"), Ok(1));
    assert_eq!(parse_usd_per_unit("1000", "image"), Ok(1_000_000_000_000));
    for bad in ["0.0000000001", "1000.000000001", "-0.04", "4e-2", ""] {
        assert!(parse_usd_per_unit(bad, "image").is_err(), "{bad}");
    }
    assert_eq!(parse_multiplier("0.5"), Ok(Multiplier(5_000)));
    assert_eq!(parse_multiplier("1.75"), Ok(Multiplier(17_500)));
    assert_eq!(parse_multiplier("0.0001"), Ok(Multiplier(1)));
    for bad in ["0", "0.00001", "100.0001", "-1", "x"] {
        assert!(parse_multiplier(bad).is_err(), "{bad}");
    }
    // A scaled rate rounds up: 3 pico x 0.5 is 2 pico, never 1.
    assert_eq!(Multiplier(5_000).apply(3), 2);
    assert_eq!(Multiplier(5_000).apply(4), 2);
}

#[test]
fn the_shipped_table_loads_and_prices_known_models() {
    let table = PriceTable::shipped().unwrap();
    let day = date!(2026 - 11 - 01);
    let usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 1_000_000,
        ..Usage::default()
    };
    let cases = [
        (Api::OpenAi, "gpt-4o-mini", 150_000_000 + 600_000_000),
        (
            Api::OpenAi,
            "gpt-4o-mini-2024-07-18",
            150_000_000 + 600_000_000,
        ),
        (Api::OpenAi, "gpt-4o", 2_500_000_000 + 10_000_000_000),
        (Api::OpenAi, "o3", 2_000_000_000 + 8_000_000_000),
        (
            Api::Anthropic,
            "claude-sonnet-4-5-20250929",
            3_000_000_000 + 15_000_000_000,
        ),
        (
            Api::Gemini,
            "gemini-2.5-flash-lite",
            100_000_000 + 400_000_000,
        ),
    ];
    for (api, model, nano) in cases {
        let (prices, source) = table.lookup(api, model, day);
        assert!(matches!(source, PriceSource::Table(_)), "{model}");
        assert_eq!(prices.cost(&usage), NanoUsd(nano), "{model}");
        // A tenth of it, below every long-context threshold, through `price`.
        let tenth = tokens(100_000, 100_000);
        assert_eq!(
            table.price(api, model, day, &tenth).cost,
            NanoUsd(nano / 10)
        );
    }
}

#[test]
fn dated_entries_apply_from_their_day() {
    let table = PriceTable::shipped().unwrap();
    let usage = Usage {
        output_tokens: 1_000_000,
        ..Usage::default()
    };
    assert_eq!(
        table
            .lookup(Api::OpenAi, "o3", date!(2025 - 05 - 01))
            .0
            .cost(&usage),
        NanoUsd(40_000_000_000)
    );
    assert_eq!(
        table
            .lookup(Api::OpenAi, "o3", date!(2025 - 06 - 10))
            .0
            .cost(&usage),
        NanoUsd(8_000_000_000)
    );
}

#[test]
fn every_token_kind_is_priced_and_rounded_up() {
    let prices = TokenPrices {
        input: 2_500_000,
        cached_input: 1_250_000,
        cache_write: 3_000_000,
        cache_write_1h: 5_000_000,
        output: 10_000_000,
    };
    let usage = Usage {
        input_tokens: 3,
        cached_input_tokens: 5,
        cache_write_tokens: 7,
        cache_write_1h_tokens: 2,
        output_tokens: 11,
        reasoning_tokens: 4,
        ..Usage::default()
    };
    // 7.5e6 + 6.25e6 + 21e6 + 10e6 + 110e6 pico = 154_750 nano exactly.
    assert_eq!(prices.cost(&usage), NanoUsd(154_750));
    let one = TokenPrices {
        input: 1,
        cached_input: 1,
        cache_write: 1,
        cache_write_1h: 1,
        output: 1,
    };
    assert_eq!(
        one.cost(&Usage {
            input_tokens: 1,
            ..Usage::default()
        }),
        NanoUsd(1)
    );
    // Absurd configured prices saturate instead of overflowing.
    let most = TokenPrices {
        input: u64::MAX,
        cached_input: u64::MAX,
        cache_write: u64::MAX,
        cache_write_1h: u64::MAX,
        output: u64::MAX,
    };
    assert_eq!(
        most.cost(&cached([u64::MAX; 4], u64::MAX)),
        NanoUsd(i64::MAX)
    );
}

#[test]
fn unknown_models_use_the_fallback_and_say_so() {
    let table = PriceTable::shipped().unwrap();
    let (prices, source) = table.lookup(Api::OpenAi, "my-finetune", date!(2026 - 01 - 01));
    assert!(matches!(source, PriceSource::Fallback));
    assert_eq!(prices.output, 30_000_000);
}

#[test]
fn overrides_replace_and_extend() {
    let raw = |model: &str, since: &str, input: &str| RawPrice {
        api: "openai".into(),
        model: model.into(),
        since: since.into(),
        input: Some(input.into()),
        output: Some("1".into()),
        ..RawPrice::default()
    };
    let table = PriceTable::shipped()
        .unwrap()
        .with_overrides(&[
            raw("gpt-4o-mini*", "2024-07-18", "0.10"),
            raw("my-finetune", "2026-01-01", "3"),
        ])
        .unwrap();
    let day = date!(2026 - 06 - 01);
    assert_eq!(
        table.lookup(Api::OpenAi, "gpt-4o-mini", day).0.input,
        100_000
    );
    let (prices, source) = table.lookup(Api::OpenAi, "my-finetune", day);
    assert_eq!(prices.input, 3_000_000);
    assert!(matches!(source, PriceSource::Table(e) if e.origin == "config"));
    let error = PriceTable::shipped()
        .unwrap()
        .with_overrides(&[raw("x", "yesterday", "1")])
        .unwrap_err();
    assert!(error.to_string().contains("not a date"), "{error}");
}

// ---- PriceTable::price against the providers' published figures ----

const M: u64 = 1_000_000;

fn tokens(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }
}

fn tier(tier: ServiceTier, input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        service_tier: tier,
        ..Usage::default()
    }
}

fn images(n: u64, size: ImageSize, quality: ImageQuality) -> Usage {
    Usage {
        images: n,
        image_variant: ImageVariant { size, quality },
        ..Usage::default()
    }
}

fn audio_ms(ms: u64) -> Usage {
    Usage {
        audio_ms: ms,
        ..Usage::default()
    }
}

fn speech(chars: u64) -> Usage {
    Usage {
        speech_chars: chars,
        ..Usage::default()
    }
}

/// Input as (uncached, cached, five-minute writes, one-hour writes), and output.
fn cached(input: [u64; 4], output: u64) -> Usage {
    Usage {
        input_tokens: input[0],
        cached_input_tokens: input[1],
        cache_write_tokens: input[2],
        cache_write_1h_tokens: input[3],
        output_tokens: output,
        ..Usage::default()
    }
}

/// What `price` must say: nano-USD, then the `unpriced` and `tier_bound` flags.
#[derive(Debug, PartialEq, Eq)]
struct Expect(i64, bool, bool);

const PRICED: (bool, bool) = (false, false);

fn check(table: &PriceTable, api: Api, model: &str, day: Date, usage: &Usage, expected: &Expect) {
    let priced = table.price(api, model, day, usage);
    assert_eq!(
        Expect(priced.cost.0, priced.unpriced, priced.tier_bound),
        *expected,
        "{model} on {day}: {usage:?}"
    );
}

fn usd(nano: i64, flags: (bool, bool)) -> Expect {
    Expect(nano, flags.0, flags.1)
}

#[test]
fn images_are_priced_by_model_size_and_quality() {
    use ImageQuality as Q;
    use ImageSize as S;
    let table = PriceTable::shipped().unwrap();
    let day = date!(2025 - 11 - 01);
    // OpenAI pricing page, "Image generation" (DALL-E 2, DALL-E 3, GPT Image
    // 1 per-image output prices), as read 2025-10; nano-USD per image.
    let cases = [
        ("dall-e-2", images(1, S::S256, Q::Unspecified), 16_000_000),
        ("dall-e-2", images(1, S::S512, Q::Standard), 18_000_000),
        ("dall-e-2", images(1, S::S1024, Q::Unspecified), 20_000_000),
        ("dall-e-3", images(1, S::S1024, Q::Standard), 40_000_000),
        ("dall-e-3", images(1, S::Wide1792, Q::Standard), 80_000_000),
        ("dall-e-3", images(1, S::S1024, Q::Hd), 80_000_000),
        ("dall-e-3", images(1, S::Wide1792, Q::Hd), 120_000_000),
        ("gpt-image-1", images(1, S::S1024, Q::Low), 11_000_000),
        ("gpt-image-1", images(1, S::Wide1536, Q::Low), 16_000_000),
        ("gpt-image-1", images(1, S::S1024, Q::Medium), 42_000_000),
        ("gpt-image-1", images(1, S::Wide1536, Q::Medium), 63_000_000),
        ("gpt-image-1", images(1, S::S1024, Q::High), 167_000_000),
        ("gpt-image-1", images(1, S::Wide1536, Q::High), 250_000_000),
        // Thirty images, the budget-bypass of the bug report: $1.20, not $0.
        ("dall-e-3", images(30, S::S1024, Q::Standard), 1_200_000_000),
        // Left open or unlisted: the dearest matching variant, a bound.
        (
            "dall-e-3",
            images(1, S::Unspecified, Q::Unspecified),
            120_000_000,
        ),
        ("dall-e-3", images(1, S::Other, Q::Standard), 80_000_000),
        ("dall-e-3", images(1, S::S1024, Q::Unspecified), 80_000_000),
        ("dall-e-3", images(1, S::S1024, Q::Other), 80_000_000),
        ("dall-e-3", images(1, S::S256, Q::Standard), 120_000_000),
        ("dall-e-2", images(1, S::Other, Q::Unspecified), 20_000_000),
        (
            "gpt-image-1",
            images(1, S::S1024, Q::Unspecified),
            167_000_000,
        ),
        ("gpt-image-1", images(2, S::Other, Q::Other), 500_000_000),
    ];
    for (model, usage, nano) in cases {
        check(&table, Api::OpenAi, model, day, &usage, &usd(nano, PRICED));
    }
    // GPT Image bills images as output tokens ($40 per million): the larger
    // of the two counts, never both. 4160 tokens is one high 1024x1024
    // image ($0.1664, published as $0.167).
    let with_output = |output_tokens, n, quality| Usage {
        output_tokens,
        ..images(n, S::S1024, quality)
    };
    let gpt_image = [
        (with_output(4160, 1, Q::High), 167_000_000),
        (with_output(10_000, 1, Q::Low), 400_000_000),
        (with_output(1_000, 0, Q::Low), 40_000_000),
        (
            Usage {
                input_tokens: 1_000,
                ..with_output(0, 2, Q::Medium)
            },
            10_000_000 + 84_000_000,
        ),
    ];
    for (usage, nano) in gpt_image {
        check(
            &table,
            Api::OpenAi,
            "gpt-image-1",
            day,
            &usage,
            &usd(nano, PRICED),
        );
    }
}

#[test]
fn audio_speech_and_moderation_are_priced_per_unit() {
    let table = PriceTable::shipped().unwrap();
    let day = date!(2025 - 11 - 01);
    // OpenAI pricing page, "Transcription and speech generation", and the
    // moderation guide ("free to use"), as read 2025-10.
    let cases = [
        ("whisper-1", audio_ms(60_000), 6_000_000),
        ("whisper-1", audio_ms(600_000), 60_000_000),
        // Billed by the second, rounded up here: 1.5 s costs 2 s.
        ("whisper-1", audio_ms(1_500), 200_000),
        ("whisper-1", audio_ms(1), 100_000),
        ("gpt-4o-transcribe", audio_ms(60_000), 6_000_000),
        ("gpt-4o-mini-transcribe", audio_ms(60_000), 3_000_000),
        ("tts-1", speech(1_000_000), 15_000_000_000),
        ("tts-1-hd", speech(1_000_000), 30_000_000_000),
        ("tts-1-hd-1106", speech(1_000), 30_000_000),
        ("tts-1", speech(1), 15_000),
        ("omni-moderation-latest", tokens(10_000, 0), 0),
        ("text-moderation-stable", tokens(10_000, 0), 0),
    ];
    for (model, usage, nano) in cases {
        check(&table, Api::OpenAi, model, day, &usage, &usd(nano, PRICED));
    }
    let priced = table.price(Api::OpenAi, "omni-moderation-latest", day, &tokens(1, 0));
    assert!(
        matches!(priced.source, PriceSource::Table(_)),
        "free, not unknown"
    );
}

#[test]
fn units_no_entry_prices_are_flagged_unpriced() {
    let table = PriceTable::shipped().unwrap();
    let day = date!(2025 - 11 - 01);
    let unpriced = (true, false);
    let mut chat_with_image = tokens(M, 0);
    chat_with_image.images = 1;
    let cases = [
        // Tokens still count; the units do not and are flagged.
        ("gpt-4o", chat_with_image, usd(2_500_000_000, unpriced)),
        ("tts-1", audio_ms(60_000), usd(0, unpriced)),
        ("whisper-1", speech(100), usd(0, unpriced)),
        (
            "dall-e-3",
            images(1, ImageSize::S1024, ImageQuality::Hd),
            usd(80_000_000, PRICED),
        ),
        // An unknown model: fallback tokens ($10 per million), units unpriced.
        (
            "my-image-model",
            images(1, ImageSize::S1024, ImageQuality::Hd),
            usd(0, unpriced),
        ),
        (
            "my-asr",
            Usage {
                input_tokens: 1000,
                audio_ms: 1000,
                ..Usage::default()
            },
            usd(10_000_000, unpriced),
        ),
    ];
    for (model, usage, expected) in cases {
        check(&table, Api::OpenAi, model, day, &usage, &expected);
    }
}

#[test]
fn anthropic_cache_writes_are_priced_by_duration() {
    let table = PriceTable::shipped().unwrap();
    let day = date!(2025 - 12 - 01);
    // Anthropic pricing page, "Model pricing" and "Prompt caching", as read
    // 2025-11: five-minute writes 1.25 x input, one-hour writes 2 x input,
    // reads 0.1 x input. 100k tokens, below Sonnet's long-context threshold.
    let k = 100_000;
    let cases = [
        ("claude-sonnet-4-5", cached([0, 0, k, 0], 0), 375_000_000),
        ("claude-sonnet-4-5", cached([0, 0, 0, k], 0), 600_000_000),
        ("claude-sonnet-4-5", cached([0, k, 0, 0], 0), 30_000_000),
        ("claude-opus-4-5", cached([0, 0, k, 0], 0), 625_000_000),
        ("claude-opus-4-5", cached([0, 0, 0, k], 0), 1_000_000_000),
        ("claude-opus-4-1", cached([0, 0, 0, k], 0), 3_000_000_000),
        ("claude-haiku-4-5", cached([0, 0, 0, k], 0), 200_000_000),
        (
            "claude-3-5-haiku-latest",
            cached([0, 0, 0, k], 0),
            160_000_000,
        ),
        (
            "claude-3-7-sonnet-latest",
            cached([0, 0, 0, k], 0),
            600_000_000,
        ),
        // 1000 of each kind on Sonnet: 3 + 0.3 + 3.75 + 6 + 15 = $0.02805.
        ("claude-sonnet-4", cached([1000; 4], 1000), 28_050_000),
    ];
    for (model, usage, nano) in cases {
        check(
            &table,
            Api::Anthropic,
            model,
            day,
            &usage,
            &usd(nano, PRICED),
        );
    }
}

#[test]
fn long_context_bills_the_whole_request_above_the_threshold() {
    let table = PriceTable::shipped().unwrap();
    let day = date!(2025 - 12 - 01);
    // Gemini pricing page, "Gemini 2.5 Pro" (2025-10): $1.25 / $10 up to
    // 200k prompt tokens, $2.50 / $15 and $0.625 cached above.
    let gemini = [
        (tokens(200_000, 1_000), 250_000_000 + 10_000_000),
        (tokens(200_001, 1_000), 500_002_500 + 15_000_000),
        (
            cached([100_001, 100_000, 0, 0], 0),
            250_002_500 + 62_500_000,
        ),
        (
            cached([100_000, 100_000, 0, 0], 0),
            125_000_000 + 31_000_000,
        ),
    ];
    for (usage, nano) in gemini {
        check(
            &table,
            Api::Gemini,
            "gemini-2.5-pro",
            day,
            &usage,
            &usd(nano, PRICED),
        );
    }
    // Gemini pricing page, "Gemini 3 Pro Preview" (2025-11).
    let gemini_3 = [
        (tokens(200_000, 1_000), 400_000_000 + 12_000_000),
        (
            cached([100_001, 100_000, 0, 0], 1_000),
            400_004_000 + 40_000_000 + 18_000_000,
        ),
    ];
    for (usage, nano) in gemini_3 {
        check(
            &table,
            Api::Gemini,
            "gemini-3-pro-preview",
            day,
            &usage,
            &usd(nano, PRICED),
        );
    }
    // Anthropic pricing page, "Long context pricing" (2025-11): Sonnet 4 and
    // 4.5 above 200k input tokens, cache reads and writes counted, $6 input,
    // $22.50 output, $0.60 reads, $7.50 / $12 writes.
    let claude = [
        (
            cached([150_000, 50_000, 0, 0], 1_000),
            450_000_000 + 15_000_000 + 15_000_000,
        ),
        (
            cached([150_000, 50_000, 1, 0], 1_000),
            900_000_000 + 30_000_000 + 7_500 + 22_500_000,
        ),
        (
            cached([150_000, 50_000, 0, 1], 0),
            900_000_000 + 30_000_000 + 12_000,
        ),
        (cached([0, 0, 0, 200_001], 0), 2_400_012_000),
    ];
    for (usage, nano) in claude {
        check(
            &table,
            Api::Anthropic,
            "claude-sonnet-4-5-20250929",
            day,
            &usage,
            &usd(nano, PRICED),
        );
    }
}

#[test]
fn service_tiers_are_priced_per_tier() {
    use ServiceTier as T;
    let table = PriceTable::shipped().unwrap();
    let day = date!(2025 - 11 - 01);
    let bound = (false, true);
    // OpenAI pricing page, "Flex", "Batch" and "Priority" tabs, as read
    // 2025-10, for 1M input, 1M cached and 1M output tokens.
    let cases = [
        (
            "gpt-5",
            tier(T::Standard, M, M, M),
            usd(11_375_000_000, PRICED),
        ),
        ("gpt-5", tier(T::Flex, M, M, M), usd(5_687_500_000, PRICED)),
        ("gpt-5", tier(T::Batch, M, M, M), usd(5_687_500_000, PRICED)),
        (
            "gpt-5",
            tier(T::Priority, M, M, M),
            usd(22_750_000_000, PRICED),
        ),
        (
            "gpt-5-mini",
            tier(T::Priority, M, M, M),
            usd(4_095_000_000, PRICED),
        ),
        (
            "gpt-4o",
            tier(T::Priority, M, M, M),
            usd(23_375_000_000, PRICED),
        ),
        (
            "gpt-4o-mini",
            tier(T::Priority, M, M, M),
            usd(1_375_000_000, PRICED),
        ),
        (
            "gpt-4.1",
            tier(T::Priority, M, M, M),
            usd(18_375_000_000, PRICED),
        ),
        (
            "gpt-4.1-mini",
            tier(T::Priority, M, M, M),
            usd(3_675_000_000, PRICED),
        ),
        (
            "gpt-4.1-nano",
            tier(T::Priority, M, M, M),
            usd(1_050_000_000, PRICED),
        ),
        (
            "o3",
            tier(T::Priority, M, M, M),
            usd(18_375_000_000, PRICED),
        ),
        ("o3", tier(T::Flex, M, M, M), usd(5_250_000_000, PRICED)),
        (
            "o4-mini",
            tier(T::Priority, M, M, M),
            usd(10_500_000_000, PRICED),
        ),
        (
            "o4-mini",
            tier(T::Flex, M, M, M),
            usd(2_887_500_000, PRICED),
        ),
        (
            "gpt-4o",
            tier(T::Batch, M, M, M),
            usd(6_875_000_000, PRICED),
        ),
        (
            "text-embedding-3-small",
            tier(T::Batch, M, 0, 0),
            usd(10_000_000, PRICED),
        ),
        // The pro models, not the cheaper models sharing their prefix.
        (
            "o3-pro",
            tier(T::Standard, M, 0, M),
            usd(100_000_000_000, PRICED),
        ),
        (
            "o3-pro-2025-06-10",
            tier(T::Batch, M, 0, M),
            usd(50_000_000_000, PRICED),
        ),
        (
            "gpt-5-pro",
            tier(T::Standard, M, 0, M),
            usd(135_000_000_000, PRICED),
        ),
        (
            "o1",
            tier(T::Standard, M, M, M),
            usd(82_500_000_000, PRICED),
        ),
        (
            "o1-pro",
            tier(T::Standard, M, 0, M),
            usd(750_000_000_000, PRICED),
        ),
        // No flex price for gpt-4o: standard, which flex never exceeds.
        (
            "gpt-4o",
            tier(T::Flex, M, M, M),
            usd(13_750_000_000, PRICED),
        ),
        // No priority price for gpt-5-nano: 2.5 x standard, flagged.
        (
            "gpt-5-nano",
            tier(T::Priority, M, M, M),
            usd(1_137_500_000, bound),
        ),
        // An unknown model: the fallback, and the bound on top of it.
        (
            "my-finetune",
            tier(T::Priority, M, 0, M),
            usd(100_000_000_000, bound),
        ),
    ];
    for (model, usage, expected) in cases {
        check(&table, Api::OpenAi, model, day, &usage, &expected);
    }
    // The GPT-5.x family (secondary sources quoting OpenAI's page, 2026-06),
    // not gpt-5's rates; 100k tokens of each kind.
    let day = date!(2026 - 07 - 01);
    let k = M / 10;
    let cases = [
        (
            "gpt-5.5",
            tier(T::Standard, k, k, k),
            usd(3_550_000_000, PRICED),
        ),
        (
            "gpt-5.5",
            tier(T::Priority, k, k, k),
            usd(8_875_000_000, PRICED),
        ),
        (
            "gpt-5.5-2026-04-23",
            tier(T::Batch, k, 0, k),
            usd(1_750_000_000, PRICED),
        ),
        (
            "gpt-5.4",
            tier(T::Priority, k, k, k),
            usd(3_550_000_000, PRICED),
        ),
        (
            "gpt-5.4-mini",
            tier(T::Standard, k, k, k),
            usd(532_500_000, PRICED),
        ),
        (
            "gpt-5.4-nano",
            tier(T::Flex, k, k, k),
            usd(73_500_000, PRICED),
        ),
        (
            "gpt-5.2",
            tier(T::Standard, k, k, k),
            usd(1_592_500_000, PRICED),
        ),
        (
            "gpt-5.1",
            tier(T::Standard, k, k, k),
            usd(1_137_500_000, PRICED),
        ),
        // Above 270k tokens, the bound band at twice every rate.
        (
            "gpt-5.4",
            tier(T::Standard, 270_001, 0, 0),
            usd(1_350_005_000, PRICED),
        ),
    ];
    for (model, usage, expected) in cases {
        check(&table, Api::OpenAi, model, day, &usage, &expected);
    }
}

#[test]
fn tiers_and_bands_switch_on_their_day() {
    let table = PriceTable::shipped().unwrap();
    let flex = tier(ServiceTier::Flex, 0, 0, M);
    // o3's price cut of 2025-06-10 carries its flex price along.
    check(
        &table,
        Api::OpenAi,
        "o3",
        date!(2025 - 06 - 09),
        &flex,
        &usd(20_000_000_000, PRICED),
    );
    check(
        &table,
        Api::OpenAi,
        "o3",
        date!(2025 - 06 - 10),
        &flex,
        &usd(4_000_000_000, PRICED),
    );
    // Sonnet 4's long-context band starts with the 1M window, 2025-08-12.
    let long = tokens(300_000, 0);
    let sonnet = "claude-sonnet-4-20250514";
    check(
        &table,
        Api::Anthropic,
        sonnet,
        date!(2025 - 08 - 11),
        &long,
        &usd(900_000_000, PRICED),
    );
    check(
        &table,
        Api::Anthropic,
        sonnet,
        date!(2025 - 08 - 12),
        &long,
        &usd(1_800_000_000, PRICED),
    );
    // Images before DALL-E 3 reached the API are unpriced, not free.
    let image = images(1, ImageSize::S1024, ImageQuality::Standard);
    let before = table.price(Api::OpenAi, "dall-e-3", date!(2023 - 11 - 05), &image);
    assert!(before.unpriced && matches!(before.source, PriceSource::Fallback));
    check(
        &table,
        Api::OpenAi,
        "dall-e-3",
        date!(2023 - 11 - 06),
        &image,
        &usd(40_000_000, PRICED),
    );
}

#[test]
fn every_shipped_entry_is_priced_in_the_right_direction() {
    // A tier or band the other way round is a typo in prices.toml: flex and
    // batch never dearer than standard, priority and long context never
    // cheaper.
    let table = PriceTable::shipped().unwrap();
    let usage = cached([M; 4], M);
    for entry in table.entries() {
        let standard = entry.prices.pico(&usage);
        let cost = |tier| tiered(entry.prices, &entry.tiers, tier).0.pico(&usage);
        assert!(cost(ServiceTier::Flex) <= standard, "{}", entry.model);
        assert!(cost(ServiceTier::Batch) <= standard, "{}", entry.model);
        assert!(
            cost(ServiceTier::Priority) > standard || standard == 0,
            "{}",
            entry.model
        );
        if let Some(band) = entry.long_context {
            assert!(band.prices.pico(&usage) > standard, "{}", entry.model);
        }
        if entry.api_kind == Api::Anthropic {
            // Anthropic's published ratios.
            assert_eq!(
                entry.prices.cache_write * 4,
                entry.prices.input * 5,
                "{}",
                entry.model
            );
            assert_eq!(
                entry.prices.cache_write_1h,
                entry.prices.input * 2,
                "{}",
                entry.model
            );
        }
    }
}

/// Parses one `[[price]]` entry as the operator writes it, over the shipped table.
fn override_with(text: &str) -> Result<PriceTable, String> {
    let raw: RawPrice = toml::from_str(text).map_err(|error| error.to_string())?;
    PriceTable::shipped()
        .unwrap()
        .with_overrides(&[raw])
        .map_err(|error| error.to_string())
}

#[test]
fn overrides_accept_every_new_field() {
    let day = date!(2026 - 01 - 01);
    let cases: &[(&str, &str, Usage, i64)] = &[
        (
            "api = 'anthropic'\nmodel = 'my-claude'\nsince = '2026-01-01'\ninput = '4'\ncache_write_1h = '9'",
            "my-claude",
            cached([0, 0, 0, M], 0),
            9_000_000_000,
        ),
        // Anthropic defaults: five-minute writes 1.25 x, one-hour 2 x input.
        (
            "api = 'anthropic'\nmodel = 'my-claude'\nsince = '2026-01-01'\ninput = '4'",
            "my-claude",
            cached([0, 0, M, M], 0),
            5_000_000_000 + 8_000_000_000,
        ),
        (
            "api = 'openai'\nmodel = 'my-gpt'\nsince = '2026-01-01'\ninput = '1'\noutput = '2'\nlong_context = { above_input_tokens = 10, input = '3', output = '4' }",
            "my-gpt",
            tokens(11, 1),
            33_000 + 4_000,
        ),
        (
            "api = 'openai'\nmodel = 'my-gpt'\nsince = '2026-01-01'\ninput = '1'\noutput = '2'\nflex = { multiplier = '0.25' }",
            "my-gpt",
            tier(ServiceTier::Flex, M, 0, M),
            750_000_000,
        ),
        (
            "api = 'openai'\nmodel = 'my-gpt'\nsince = '2026-01-01'\ninput = '1'\noutput = '2'\npriority = { input = '5', output = '7' }",
            "my-gpt",
            tier(ServiceTier::Priority, M, M, M),
            5_000_000_000 + 5_000_000_000 + 7_000_000_000,
        ),
        (
            "api = 'openai'\nmodel = 'my-gpt'\nsince = '2026-01-01'\ninput = '1'\noutput = '2'\nbatch = { multiplier = '0.5' }\nlong_context = { above_input_tokens = 10, input = '3', output = '4' }",
            "my-gpt",
            Usage {
                service_tier: ServiceTier::Batch,
                ..tokens(11, 1)
            },
            16_500 + 2_000,
        ),
        (
            "api = 'openai'\nmodel = 'dall-e-3'\nsince = '2026-01-01'\nimages = [{ size = '1024x1792', quality = 'hd', usd = '0.5' }]",
            "dall-e-3",
            images(2, ImageSize::Wide1792, ImageQuality::Hd),
            1_000_000_000,
        ),
        (
            "api = 'openai'\nmodel = 'my-asr'\nsince = '2026-01-01'\naudio_per_minute = '0.012'",
            "my-asr",
            audio_ms(30_000),
            6_000_000,
        ),
        (
            "api = 'openai'\nmodel = 'my-tts'\nsince = '2026-01-01'\nspeech_per_million_chars = '20'",
            "my-tts",
            speech(1_000),
            20_000_000,
        ),
    ];
    for (text, model, usage, nano) in cases {
        let table = override_with(text).unwrap();
        let api = if text.contains("anthropic") {
            Api::Anthropic
        } else {
            Api::OpenAi
        };
        let priced = table.price(api, model, day, usage);
        assert_eq!(priced.cost, NanoUsd(*nano), "{text}");
        assert!(!priced.unpriced && !priced.tier_bound, "{text}");
        assert!(
            matches!(priced.source, PriceSource::Table(e) if e.origin == "config"),
            "{text}"
        );
    }
}

#[test]
fn bad_entries_are_explained() {
    let head = "api = 'openai'\nmodel = 'm'\nsince = '2026-01-01'\n";
    let cases = [
        (
            "input = '1'\nspeech_per_char = '1'",
            "unknown field `speech_per_char`",
        ),
        (
            "input = '1'\nflex = { multiplier = '0.5', discount = '1' }",
            "unknown field `discount`",
        ),
        (
            "input = '1'\nlong_context = { above_input_tokens = 1, input = '2' }",
            "missing field `output`",
        ),
        (
            "input = '1'\nlong_context = { above = 1, input = '2', output = '3' }",
            "unknown field `above`",
        ),
        (
            "input = '1'\nimages = [{ size = '1024x1024', usd = '1', price = '2' }]",
            "unknown field `price`",
        ),
        ("output = '1'", "`input` is missing"),
        (
            "images = [{ size = '300x300', usd = '0.01' }]",
            "image size `300x300`",
        ),
        (
            "images = [{ size = 'auto', usd = '0.01' }]",
            "image size `auto`",
        ),
        (
            "images = [{ size = '1024x1024', quality = 'ultra', usd = '0.01' }]",
            "image quality `ultra`",
        ),
        (
            "images = [{ size = '1024x1024', usd = '0.0000000001' }]",
            "USD per image",
        ),
        (
            "images = [{ size = '1024x1024', usd = '1' }, { size = '1024x1024', usd = '2' }]",
            "listed twice",
        ),
        ("audio_per_minute = 'six'", "USD per minute"),
        (
            "speech_per_million_chars = '-15'",
            "USD per million characters",
        ),
        (
            "input = '1'\nflex = { multiplier = '0' }",
            "flex: `0` is not a multiplier",
        ),
        (
            "input = '1'\nbatch = {}",
            "batch: give `multiplier` or token prices",
        ),
        (
            "input = '1'\nflex = { multiplier = '0.5', input = '1' }",
            "not both",
        ),
        (
            "input = '1'\npriority = { input = '2' }",
            "both `input` and `output`",
        ),
        (
            "input = '1'\npriority = { input = '2', output = 'x' }",
            "priority: `x` is not a price",
        ),
        (
            "input = '1'\nlong_context = { above_input_tokens = 1, input = '2', output = '3' }\npriority = { input = '2', output = '3' }",
            "gives its tiers as a `multiplier`",
        ),
        (
            "input = '1'\nlong_context = { above_input_tokens = 1, input = '2.0000001', output = '3' }",
            "long_context: `2.0000001`",
        ),
        (
            "input = '1'\ncache_write_1h = 'lots'",
            "`lots` is not a price",
        ),
    ];
    for (body, expected) in cases {
        let error = override_with(&format!("{head}{body}")).unwrap_err();
        assert!(error.contains(expected), "{body}: {error}");
    }
}
