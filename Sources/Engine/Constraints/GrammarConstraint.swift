import Foundation

/// A grammar as a logits processor: tokens the grammar does not allow next get -∞. The
/// state after each kept token is remembered, so `rollback` is a pop and a copy is an
/// independent matcher over the same shared automaton.
///
/// Valid under a cap: with `maxTokens` known, a token is allowed only if the shortest
/// finish of the grammar after it (as the tokenizer spells it) still fits in the tokens
/// left; when no token passes, the output follows the shortest finish from where it is,
/// which fits because the token that led here passed. So a capped output closes what it
/// opened and still parses, and `finish_reason` says `length` when the cap bit.
public struct GrammarConstraint: LogitsProcessor {
    public let automaton: GrammarAutomaton
    private var states: [Int32]
    /// Per state, the finishing tokens still to follow once a plan was taken.
    private var plans: [[Int]]
    private let maxTokens: Int
    /// The automaton limit a kept token ran into.
    public private(set) var failure: (any Error)?
    /// For a triggered grammar: the triggers' bytes, and per kept token whether the grammar
    /// was on after it (while off, nothing is masked).
    private let triggers: [[UInt8]]
    private let startTriggers: [[UInt8]]
    /// Whether anything but whitespace came before (a start trigger can no longer fire).
    private var begun = false
    private var on: [Bool]
    /// The output's last bytes while waiting for the trigger.
    private var recent: [UInt8] = []

    /// `triggers`: the grammar is off until one of them appears in the output, and then
    /// matches from the trigger's first byte on.
    public init(automaton: GrammarAutomaton, maxTokens: Int, triggers: (anywhere: [String], atStart: [String])? = nil) {
        self.automaton = automaton
        states = [automaton.initial]
        plans = [[]]
        self.maxTokens = maxTokens
        self.triggers = (triggers?.anywhere ?? []).map { Array($0.utf8) }
        startTriggers = (triggers?.atStart ?? []).map { Array($0.utf8) }
        on = [triggers == nil]
    }

    /// The current state (`GrammarAutomaton.dead` once a token outside the grammar was kept).
    public var state: Int32 { states[states.count - 1] }

    public mutating func process(_ logits: inout [Float], history: [Int]) {
        guard on[on.count - 1] else { return }
        let started = DispatchTime.now().uptimeNanoseconds
        defer {
            automaton.counters.maskNanoseconds += DispatchTime.now().uptimeNanoseconds - started
            automaton.counters.maskedTokens += 1
        }
        if plans[plans.count - 1].isEmpty, state >= 0 {
            if let hit = automaton.maskLimit(state) { failure = failure ?? hit }
            switch automaton.allowed(state, budget: maxTokens - states.count) {
            case .mask(let words) where words.contains(where: { $0 != 0 }):
                apply(words, to: &logits)
                return
            case .mask:
                break
            case .plan(let p):
                plans[plans.count - 1] = p
            }
        }
        // Follow the plan; with none (a dead state, a limit of the automaton hit), end
        // rather than emit what the grammar does not allow.
        let only = plans[plans.count - 1].first ?? automaton.trie.endOfGeneration.first ?? 0
        let keep = only < logits.count ? logits[only] : 0
        for i in logits.indices { logits[i] = -.infinity }
        if only < logits.count { logits[only] = keep.isFinite ? keep : 0 }
    }

    /// Sets the logits of tokens outside `words` to -∞, touching only the minority: with
    /// few allowed (between fields), a fresh -∞ row gets their logits; with most allowed
    /// (inside a string), the few others are cleared.
    private func apply(_ words: [UInt64], to logits: inout [Float]) {
        let n = logits.count
        // Rows past the tokenizer's vocabulary (a model's padding) are never allowed.
        for i in min(n, automaton.trie.vocabularySize)..<n { logits[i] = -.infinity }
        var allowed = 0
        for w in words { allowed &+= w.nonzeroBitCount }
        if allowed < n / 2 {
            // Word by word: keep a word's allowed logits aside (64 at most, on the stack),
            // clear its 64 rows, put them back. Rows past the words are cleared too.
            logits.withUnsafeMutableBufferPointer { l in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 64) { saved in
                    for (w, word) in words.enumerated() where w << 6 < n {
                        let base = w << 6
                        var bits = word, k = 0
                        while bits != 0 {
                            let i = base | bits.trailingZeroBitCount
                            if i < n { saved[k] = l[i]; k += 1 }
                            bits &= bits &- 1
                        }
                        for i in base..<min(base + 64, n) { l[i] = -.infinity }
                        bits = word
                        k = 0
                        while bits != 0 {
                            let i = base | bits.trailingZeroBitCount
                            if i < n { l[i] = saved[k]; k += 1 }
                            bits &= bits &- 1
                        }
                    }
                    for i in min(words.count << 6, n)..<n { l[i] = -.infinity }
                }
            }
        } else {
            logits.withUnsafeMutableBufferPointer { l in
                for (w, word) in words.enumerated() {
                    var bits = ~word
                    while bits != 0 {
                        let i = w << 6 | bits.trailingZeroBitCount
                        if i < n { l[i] = -.infinity }
                        bits &= bits &- 1
                    }
                }
            }
        }
    }

    public mutating func accept(_ token: Int) {
        let plan = plans[plans.count - 1]
        plans.append(plan.first == token ? Array(plan.dropFirst()) : [])
        if on[on.count - 1] {
            states.append(automaton.next(state, token: token))
            if let hit = automaton.limitHit { failure = failure ?? hit }
            on.append(true)
            return
        }
        // Waiting: does a trigger complete in this token? Then the grammar runs over the
        // output from the trigger's start.
        let bytes = token < automaton.trie.vocabularySize ? automaton.trie.tokenBytes[token] : []
        let longest = (triggers + startTriggers).map(\.count).max() ?? 0
        let before = recent.count
        recent += bytes
        var starts = triggers.compactMap { Self.start(of: $0, in: recent, endingAfter: before) }
        if !begun {
            // The output so far is whitespace and then possibly a start trigger.
            let lead = recent.prefix { $0 == 0x20 || $0 == 0x0A || $0 == 0x09 || $0 == 0x0D }.count
            let rest = recent[lead...]
            for t in startTriggers where rest.starts(with: t) { starts.append(lead) }
            if !rest.isEmpty, !startTriggers.contains(where: { t in t.starts(with: rest.prefix(t.count)) }) { begun = true }
        }
        if let start = starts.min() {
            states.append(automaton.next(automaton.initial, bytes: recent[start...]))
            on.append(true)
            recent = []
        } else {
            if recent.count > 4 * longest + 64 { recent.removeFirst(recent.count - longest) }
            states.append(state)
            on.append(false)
        }
    }

    /// Where the first occurrence of `needle` that ends past `previous` bytes starts.
    private static func start(of needle: [UInt8], in haystack: [UInt8], endingAfter previous: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        var i = max(0, previous - needle.count + 1)
        while i + needle.count <= haystack.count {
            if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    public mutating func rollback(_ count: Int) {
        let n = min(count, states.count - 1)
        states.removeLast(n)
        plans.removeLast(n)
        on.removeLast(n)
        // The bytes seen while waiting are not kept per token; after a rollback into
        // waiting, the search starts afresh.
        recent = []
    }
}
