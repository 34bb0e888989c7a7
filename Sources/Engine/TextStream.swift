import Tokenizer

/// The text of one generated sequence as it may be shown: never part of a UTF-8
/// character, never part of a stop string, nothing after a stop string.
struct TextStream {
    private var decoder: StreamingDecoder
    private var stops: StopStringMatcher
    private(set) var stopped = false

    init(tokenizer: Tokenizer, stopStrings: [String], shownControlTokens: Set<Int> = []) {
        decoder = StreamingDecoder(tokenizer: tokenizer, shown: shownControlTokens)
        stops = StopStringMatcher(stopStrings)
    }

    /// The text that became final with `token`; `stopped` is set when a stop string ended it.
    mutating func append(_ token: Int) -> String {
        guard !stopped else { return "" }
        let (text, stop) = stops.append(decoder.append(token))
        stopped = stop
        return text
    }

    /// Whatever was held back, once generation has ended for another reason.
    mutating func finish() -> String {
        guard !stopped else { return "" }
        let (text, stop) = stops.append(decoder.finish())
        stopped = stop
        return stop ? text : text + stops.flush()
    }
}
