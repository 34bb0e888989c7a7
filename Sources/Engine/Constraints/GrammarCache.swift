import Foundation
import Tokenizer

/// Compiled grammars by their GBNF text, shared by every request that uses one, with the
/// vocabulary trie they mask over. `Engine.validate` compiles on the caller's thread while
/// the engine thread takes automata for new requests, so the cache is behind a lock; an
/// automaton itself is only ever advanced on the engine thread.
final class GrammarCache: @unchecked Sendable {
    private let tokenizer: Tokenizer
    private let lock = NSLock()
    /// Vocabulary tries by the control tokens they show (none, or a tool-call format's markers).
    private var tries: [Set<Int>: TokenTrie] = [:]
    private var automata: [Key: GrammarAutomaton] = [:]
    private struct Key: Hashable {
        let gbnf: String
        let shown: Set<Int>
    }
    /// What retired automata counted, so the statistics keep it.
    private var retired = MaskCounters()
    static let maxGrammars = 16
    /// How deep an output may nest a grammar's rules (lowered by tests).
    var maxNesting = GrammarAutomaton.defaultMaxDepth

    init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The automaton of a constraint over the vocabulary with `showing` as text, compiled on
    /// first use. One that has grown large over many requests is replaced by a fresh one for
    /// new requests (those using it keep it).
    func automaton(for constraint: OutputConstraint, showing: Set<Int> = []) throws -> GrammarAutomaton {
        let key = Key(gbnf: try constraint.gbnf(), shown: showing)
        lock.lock()
        defer { lock.unlock() }
        if let a = automata[key], a.stateCount < GrammarAutomaton.maxStates / 2 { return a }
        let trie = tries[showing] ?? TokenTrie(tokenizer: tokenizer, shownControlTokens: showing)
        tries[showing] = trie
        let a = try GrammarAutomaton(grammar: Grammar(gbnf: key.gbnf), trie: trie, maxDepth: maxNesting)
        if automata.count >= Self.maxGrammars { for k in Array(automata.keys) { retire(k) } }
        retire(key)
        automata[key] = a
        return a
    }

    private func retire(_ key: Key) {
        guard let a = automata.removeValue(forKey: key) else { return }
        retired += a.counters
    }

    /// Adds what masking cost so far to `s`. Called on the engine thread, which alone
    /// advances the counters it reads.
    func addStatistics(to s: inout EngineStatistics) {
        lock.lock()
        defer { lock.unlock() }
        var r = retired
        for a in automata.values { r += a.counters }
        s.constrainedTokens += r.maskedTokens
        s.maskSeconds += Double(r.maskNanoseconds) / 1e9
        s.maskWalks += r.walks
        s.maskWalkSeconds += Double(r.walkNanoseconds) / 1e9
        s.maskBuildSeconds += Double(r.buildNanoseconds) / 1e9
        s.splitMasks += r.splitMasks
        s.splitMaskSeconds += Double(r.splitMaskNanoseconds) / 1e9
    }
}
