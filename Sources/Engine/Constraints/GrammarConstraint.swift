import Foundation

/// A grammar as a logits processor: tokens the grammar does not allow next get -∞. The
/// state after each kept token is remembered, so `rollback` is a pop and a copy is an
/// independent matcher over the same shared automaton.
///
/// Valid under a cap: with `maxTokens` known, once the tokens left could no longer spell
/// the shortest finish of the grammar after some token, that token is masked too, so the
/// output is steered to close what it opened and a capped output still parses (each token
/// is at least one byte, and every byte is a token, so the bound always leaves a way out).
public struct GrammarConstraint: LogitsProcessor {
    public let automaton: GrammarAutomaton
    private var states: [Int32]
    private let maxTokens: Int

    public init(automaton: GrammarAutomaton, maxTokens: Int) {
        self.automaton = automaton
        states = [automaton.initial]
        self.maxTokens = maxTokens
    }

    /// The current state (`GrammarAutomaton.dead` once a token outside the grammar was kept).
    public var state: Int32 { states[states.count - 1] }

    public func process(_ logits: inout [Float], history: [Int]) {
        let started = DispatchTime.now().uptimeNanoseconds
        let tokensLeftAfterThis = maxTokens - states.count
        let words = automaton.allowed(state, budget: tokensLeftAfterThis)
        logits.withUnsafeMutableBufferPointer { l in
            for (w, word) in words.enumerated() where word != ~0 {
                let base = w << 6
                for bit in 0..<min(64, l.count - base) where word & (1 << UInt64(bit)) == 0 {
                    l[base + bit] = -.infinity
                }
            }
        }
        // Nothing allowed (a limit of the automaton was hit): end rather than emit garbage.
        if state < 0 || words.allSatisfy({ $0 == 0 }) {
            for t in automaton.trie.endOfGeneration where t < logits.count { logits[t] = 0 }
        }
        automaton.maskNanoseconds += DispatchTime.now().uptimeNanoseconds - started
        automaton.maskedTokens += 1
    }

    public mutating func accept(_ token: Int) {
        states.append(automaton.next(state, token: token))
    }

    public mutating func rollback(_ count: Int) {
        states.removeLast(min(count, states.count - 1))
    }
}
