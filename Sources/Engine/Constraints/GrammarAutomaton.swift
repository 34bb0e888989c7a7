import Foundation

/// The pushdown automaton of a grammar, run over bytes, with everything it learns cached.
///
/// A *stack* is a path of grammar positions: the top is a byte set to match next, the rest
/// are return positions (llama.cpp's representation, with tail references replacing their
/// frame, so `x*` does not grow the stack). Stacks are interned as (parent, position)
/// nodes; node 0 is the empty stack, meaning the grammar has matched completely. A *state*
/// is the set of stacks alive after some input (the grammar may be ambiguous), interned
/// too, so a byte's transition from a state is computed once and then read from a table:
/// the automaton becomes a DFA lazily, only where output goes.
///
/// The tokens allowed in a state come from one walk of the vocabulary trie along those
/// transitions, cached per state: a repeated state (inside any string, between fields)
/// costs a lookup. Shared by every request with the same grammar; used from one thread,
/// the engine's.
public final class GrammarAutomaton: @unchecked Sendable {
    public let grammar: Grammar
    let trie: TokenTrie

    private var nodeParent: [Int32] = [-1]
    private var nodePosition: [Int32] = [-1]
    private var nodeDepth: [Int32] = [0]
    private var nodeCompletion: [Int32] = [0]
    private var nodeIndex: [UInt64: Int32] = [:]

    private var stacks: [[Int32]] = []
    private var stateIndex: [[Int32]: Int32] = [:]
    /// 256 entries per state: the state after each byte, `dead`, or `unknown` until asked.
    /// A raw buffer, read in the vocabulary walk without the checks an array property
    /// of a class costs on every access.
    private var transitions = UnsafeMutablePointer<Int32>.allocate(capacity: 256 * 64)
    private var transitionCapacity = 64
    private var completions: [Int32] = []
    private var masks: [Int32: Mask] = [:]
    private var budgetGroups: [Int32: [(finish: Int, words: [UInt64])]] = [:]
    private var finishPlans: [Int32: [Int]] = [:]
    public private(set) var initial: Int32 = 0

    /// Time spent computing and applying masks, and how many times (for the statistics).
    public internal(set) var maskNanoseconds: UInt64 = 0
    public internal(set) var maskedTokens: Int = 0
    /// Masks computed (a state's first mask, a capped state's groups: a walk of the
    /// vocabulary and the finishes of where it ends) and their time, part of the above:
    /// what a cache miss costs.
    public private(set) var walks = 0
    public private(set) var walkNanoseconds: UInt64 = 0

    static let dead: Int32 = -1
    private static let unknown: Int32 = -2
    static let maxStates = 20_000
    static let maxStacksPerState = 4_096
    public static let defaultMaxDepth = 10_000
    /// The most rules a stack may nest.
    let maxDepth: Int
    /// The limit the last `next(_:token:)` hit, when it hit one.
    public private(set) var limitHit: GrammarError?
    /// `computeNext`'s answer when a limit was hit: dead, and not remembered as a
    /// transition (the grammar does allow the byte; the automaton could not follow it).
    private static let limit: Int32 = -3
    static let maxCachedMasks = 2_048

    struct Mask {
        var words: [UInt64]
        /// The most tokens a shortest finish takes after any allowed token.
        var maxTokensToFinishAfter: Int
        /// A limit the walk hit: tokens past it are left out of the mask.
        var limit: GrammarError?
    }

    deinit { transitions.deallocate() }

    public init(grammar: Grammar, trie: TokenTrie, maxDepth: Int = GrammarAutomaton.defaultMaxDepth) throws {
        self.grammar = grammar
        self.trie = trie
        self.maxDepth = maxDepth
        var start = Set<Int32>(), visited = Set<Int32>()
        for alt in grammar.alternatives[Int(grammar.root)] {
            try expand(node(parent: 0, position: alt), into: &start, visited: &visited, depth: 0)
        }
        initial = try state(start)
    }

    public var stateCount: Int { stacks.count }

    /// Whether the grammar may end in state `s`.
    public func isAccepting(_ s: Int32) -> Bool { s >= 0 && stacks[Int(s)].first == 0 }

    /// The state after `byte`, or `dead`.
    @inline(__always) public func next(_ s: Int32, _ byte: UInt8) -> Int32 {
        let k = Int(s) &* 256 &+ Int(byte)
        let t = transitions[k]
        if t != Self.unknown { return t }
        let r = computeNext(s, byte)
        if r == Self.limit { return Self.dead }
        transitions[k] = r
        return r
    }

    public func next(_ s: Int32, bytes: some Swift.Sequence<UInt8>) -> Int32 {
        var s = s
        for b in bytes {
            if s < 0 { return Self.dead }
            s = next(s, b)
        }
        return s
    }

    /// The state after `token`; end-of-generation tokens leave an accepting state as it is.
    public func next(_ s: Int32, token: Int) -> Int32 {
        limitHit = nil
        guard s >= 0, token >= 0, token < trie.vocabularySize else { return Self.dead }
        let b = trie.tokenBytes[token]
        if b.isEmpty { return trie.endOfGeneration.contains(token) && isAccepting(s) ? s : Self.dead }
        return next(s, bytes: b)
    }

    /// The fewest bytes that finish the grammar from state `s`.
    public func completion(_ s: Int32) -> Int32 {
        let c = completions[Int(s)]
        if c >= 0 { return c }
        var best = Grammar.unbounded
        for n in stacks[Int(s)] { best = min(best, completion(node: n)) }
        completions[Int(s)] = best
        return best
    }

    /// A shortest text that finishes the grammar from state `s`: follow the stack that is
    /// closest to finishing, one byte of its top set at a time.
    public func shortestCompletion(_ s: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var s = s
        while s >= 0, completion(s) > 0 {
            guard let n = stacks[Int(s)].filter({ $0 != 0 }).min(by: { completion(node: $0) < completion(node: $1) }),
                  case .bytes(let set) = grammar.elements[Int(nodePosition[Int(n)])],
                  let b = grammar.byteSets[Int(set)].representative else { break }
            out.append(b)
            s = next(s, b)
        }
        return out
    }

    /// The tokens of a shortest finish from state `s` (its spelling by the tokenizer), the
    /// plan a capped output follows once nothing else would fit.
    func finishingTokens(_ s: Int32) -> [Int] {
        if let p = finishPlans[s] { return p }
        let p = trie.spelling(shortestCompletion(s)) ?? []
        if finishPlans.count >= 1 << 16 { finishPlans.removeAll() }
        finishPlans[s] = p
        return p
    }

    /// What may come next in state `s`: a mask over the vocabulary, or, when the tokens left
    /// after this one (`budget`) leave room for no token's way to finish, the plan to follow.
    enum Allowed {
        case mask([UInt64])
        case plan([Int])
    }

    /// The limit the mask of state `s` ran into, if it did (its mask leaves out what lies
    /// past it).
    func maskLimit(_ s: Int32) -> GrammarError? { s >= 0 ? mask(s).limit : nil }

    /// The tokens allowed in state `s`. With `budget` tokens left after this one, only
    /// tokens after which a shortest finish still fits in the budget; when none does, the
    /// shortest finish from here, token by token (it fits, or no output would).
    func allowed(_ s: Int32, budget: Int) -> Allowed {
        let mask = self.mask(s)
        guard budget < mask.maxTokensToFinishAfter else { return .mask(mask.words) }
        // The widest group that fits the budget.
        var best: [UInt64]? = nil
        for g in finishGroups(s) where g.finish <= budget { best = g.words }
        return best.map { .mask($0) } ?? .plan(finishingTokens(s))
    }

    /// The allowed tokens of state `s` by how many tokens a shortest finish takes after
    /// them, cumulatively: entry k allows every token whose finish takes at most
    /// `finish` tokens (and the end, where the grammar may end), so a mask under any budget
    /// is one lookup. Computed once per state that a capped output reaches near its end.
    private func finishGroups(_ s: Int32) -> [(finish: Int, words: [UInt64])] {
        if let g = budgetGroups[s] { return g }
        let started = DispatchTime.now().uptimeNanoseconds
        defer { countWalk(since: started) }
        let wordCount = (trie.vocabularySize + 63) / 64
        // Tokens and where they end first, finishes after: the walk's body must not build
        // states (that may move the transition table the walk reads).
        var tokens: [Int32] = [], ends: [Int32] = []
        walk(from: s) { token, end in
            tokens.append(token)
            ends.append(end)
        }
        var finishOf: [Int32: Int] = [:]
        var finishes: [Int] = []
        var groups: [[UInt64]] = []
        for (token, end) in zip(tokens, ends) {
            let f: Int
            if let known = finishOf[end] { f = known } else { f = finishingTokens(end).count; finishOf[end] = f }
            let k: Int
            if let existing = finishes.firstIndex(of: f) { k = existing } else {
                k = finishes.count
                finishes.append(f)
                groups.append([UInt64](repeating: 0, count: wordCount))
            }
            groups[k][Int(token) >> 6] |= 1 << UInt64(token & 63)
        }
        var cumulative: [(finish: Int, words: [UInt64])] = []
        var running = [UInt64](repeating: 0, count: wordCount)
        if isAccepting(s) { for t in trie.endOfGeneration { running[t >> 6] |= 1 << UInt64(t & 63) } }
        for k in finishes.indices.sorted(by: { finishes[$0] < finishes[$1] }) {
            for w in 0..<wordCount { running[w] |= groups[k][w] }
            cumulative.append((finishes[k], running))
        }
        if budgetGroups.count >= Self.maxCachedMasks / 64 { budgetGroups.removeAll() }
        budgetGroups[s] = cumulative
        return cumulative
    }

    private func mask(_ s: Int32) -> Mask {
        if let m = masks[s] { return m }
        let started = DispatchTime.now().uptimeNanoseconds
        defer { countWalk(since: started) }
        limitHit = nil
        var words = [UInt64](repeating: 0, count: (trie.vocabularySize + 63) / 64)
        var worst = 0
        if s >= 0 {
            // End states repeat for almost every token (inside a string, all but a few end
            // in the same one): look each up once, marked in an array by state id.
            // The walk's body must not build states (that may move the transition table the
            // walk reads): finishes are worked out after it.
            var seen = [Bool](repeating: false, count: stacks.count + 64)
            var ends: [Int32] = []
            walk(from: s) { token, end in
                words[Int(token) >> 6] |= 1 << UInt64(token & 63)
                let e = Int(end)
                if e >= seen.count { seen += repeatElement(false, count: e + 64 - seen.count) }
                if !seen[e] {
                    seen[e] = true
                    ends.append(end)
                }
            }
            for end in ends { worst = max(worst, finishingTokens(end).count) }
            if isAccepting(s) { for t in trie.endOfGeneration { words[t >> 6] |= 1 << UInt64(t & 63) } }
        }
        if masks.count >= Self.maxCachedMasks { masks.removeAll() }
        let m = Mask(words: words, maxTokensToFinishAfter: worst, limit: limitHit)
        masks[s] = m
        return m
    }

    private func countWalk(since started: UInt64) {
        walks += 1
        walkNanoseconds += DispatchTime.now().uptimeNanoseconds - started
    }

    /// Calls `body` with every token that can follow state `s` and the state after it.
    /// Transitions are read straight from the table; a byte not seen before in a state is
    /// computed (which may move the table) and the walk goes on.
    private func walk(from s: Int32, _ body: (Int32, Int32) -> Void) {
        var at = [Int32](repeating: 0, count: trie.maxDepth + 1)
        at[0] = s
        let count = trie.nodeCount
        trie.byte.withUnsafeBufferPointer { byte in
        trie.depth.withUnsafeBufferPointer { depth in
        trie.subtreeEnd.withUnsafeBufferPointer { end in
        trie.tokenStart.withUnsafeBufferPointer { start in
        trie.tokens.withUnsafeBufferPointer { tokens in
        at.withUnsafeMutableBufferPointer { at in
            var table = transitions
            var i = 0
            while i < count {
                let d = Int(depth[i])
                let from = at[d &- 1]
                var t = table[Int(from) &* 256 &+ Int(byte[i])]
                if t == Self.unknown {
                    t = next(from, byte[i])
                    table = transitions
                }
                if t < 0 { i = Int(end[i]); continue }
                at[d] = t
                let first = Int(start[i]), last = Int(start[i &+ 1])
                if first < last { for k in first..<last { body(tokens[k], t) } }
                i &+= 1
            }
        }}}}}}
    }

    // MARK: building states

    private func node(parent: Int32, position: Int32) throws -> Int32 {
        let key = UInt64(UInt32(bitPattern: parent)) << 32 | UInt64(UInt32(bitPattern: position))
        if let n = nodeIndex[key] { return n }
        let depth = nodeDepth[Int(parent)] + 1
        guard depth <= maxDepth else { throw GrammarError.tooLarge("the output nests the grammar's rules deeper than \(maxDepth)") }
        let n = Int32(nodeParent.count)
        nodeParent.append(parent)
        nodePosition.append(position)
        nodeDepth.append(depth)
        nodeCompletion.append(-1)
        nodeIndex[key] = n
        return n
    }

    /// Adds the stacks `n` stands for once rule references at its top are expanded and
    /// finished alternatives popped, so that every stack added has a byte set on top (or
    /// is empty).
    private func expand(_ n: Int32, into out: inout Set<Int32>, visited: inout Set<Int32>, depth: Int) throws {
        guard depth < maxDepth + 4 * grammar.alternatives.count + 64 else { throw GrammarError.tooLarge("an expansion that does not end") }
        // A node expands to the same stacks however it is reached: once per computation,
        // or `n ::= "" | ""` repeated would expand exponentially.
        guard visited.insert(n).inserted else { return }
        if n == 0 { out.insert(0); return }
        let position = nodePosition[Int(n)]
        switch grammar.elements[Int(position)] {
        case .bytes:
            out.insert(n)
        case .end:
            try expand(nodeParent[Int(n)], into: &out, visited: &visited, depth: depth + 1)
        case .rule(let r):
            let parent = nodeParent[Int(n)]
            let base = grammar.elements[Int(position) + 1] == .end ? parent : try node(parent: parent, position: position + 1)
            for alt in grammar.alternatives[Int(r)] {
                try expand(try node(parent: base, position: alt), into: &out, visited: &visited, depth: depth + 1)
            }
        }
        if out.count > Self.maxStacksPerState { throw GrammarError.tooLarge("more than \(Self.maxStacksPerState) parses alive at once (an ambiguous grammar)") }
    }

    private func state(_ set: Set<Int32>) throws -> Int32 {
        let key = set.sorted()
        if let s = stateIndex[key] { return s }
        guard stacks.count < Self.maxStates else { throw GrammarError.tooLarge("more than \(Self.maxStates) automaton states") }
        let s = Int32(stacks.count)
        stacks.append(key)
        stateIndex[key] = s
        if stacks.count > transitionCapacity {
            let bigger = UnsafeMutablePointer<Int32>.allocate(capacity: 256 * transitionCapacity * 2)
            bigger.update(from: transitions, count: 256 * (stacks.count - 1))
            transitions.deallocate()
            transitions = bigger
            transitionCapacity *= 2
        }
        (transitions + 256 * (stacks.count - 1)).initialize(repeating: Self.unknown, count: 256)
        completions.append(-1)
        return s
    }

    private func computeNext(_ s: Int32, _ byte: UInt8) -> Int32 {
        do {
            var out = Set<Int32>(), visited = Set<Int32>()
            for n in stacks[Int(s)] where n != 0 {
                let position = nodePosition[Int(n)]
                guard case .bytes(let set) = grammar.elements[Int(position)], grammar.byteSets[Int(set)].contains(byte) else { continue }
                try expand(try node(parent: nodeParent[Int(n)], position: position + 1), into: &out, visited: &visited, depth: 0)
            }
            return out.isEmpty ? Self.dead : try state(out)
        } catch {
            limitHit = error as? GrammarError ?? .tooLarge("the grammar's automaton")
            return Self.limit
        }
    }

    private func completion(node n: Int32) -> Int32 {
        var path: [Int32] = []
        var m = n
        while nodeCompletion[Int(m)] < 0 { path.append(m); m = nodeParent[Int(m)] }
        var c = nodeCompletion[Int(m)]
        for p in path.reversed() {
            c = min(Grammar.unbounded, c + grammar.minSuffix[Int(nodePosition[Int(p)])])
            nodeCompletion[Int(p)] = c
        }
        return nodeCompletion[Int(n)]
    }
}
