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
/// The tokens allowed in a state are cached per state, and built from XGrammar's split
/// (Dong et al. 2024): what a state allows is decided almost entirely by the top frames of
/// its stacks. Each stack is cut below one node (`cutNode`), and what lies below becomes
/// node `context`. The cut state is walked once along the vocabulary trie, which sorts every
/// token into allowed, refused, or *dependent*: some parse leaves the kept frames before
/// the token's last byte, so the frames cut off decide. Every state with the same kept
/// frames shares that walk (a string at any depth of nesting, the fields of each item of an
/// array), and its own mask costs a walk of the few subtrees of dependent tokens. A limit
/// of the automaton that only the full stacks reach shows when such a token is kept (the
/// request fails naming it), not in the mask. Shared by every request with the same
/// grammar; used from one thread, the engine's.
public final class GrammarAutomaton: @unchecked Sendable {
    public let grammar: Grammar
    let trie: TokenTrie

    /// Node 0 is the empty stack, node 1 (`context`) the frames below a cut stack's top.
    private var nodeParent: [Int32] = [-1, -1]
    private var nodePosition: [Int32] = [-1, -1]
    private var nodeDepth: [Int32] = [0, 0]
    /// A cut stack's finish counts the context as nothing (its own is added where known).
    private var nodeCompletion: [Int32] = [0, 0]
    private var nodeIndex: [UInt64: Int32] = [:]

    private var stacks: [[Int32]] = []
    private var stateIndex: [[Int32]: Int32] = [:]
    /// 256 entries per state: the state after each byte, `dead`, or `unknown` until asked.
    /// A raw buffer, read in the vocabulary walk without the checks an array property
    /// of a class costs on every access.
    private var transitions = UnsafeMutablePointer<Int32>.allocate(capacity: 256 * 64)
    private var transitionCapacity = 64
    /// Per state, whether a stack of it popped into the context (same layout reasons).
    private var poppedIntoContext = UnsafeMutablePointer<Bool>.allocate(capacity: 64)
    private var completions: [Int32] = []
    private var masks: [Int32: Mask] = [:]
    /// The splits of the vocabulary by cut state, and for some, where each token goes.
    private var splits: [Int32: Split] = [:]
    private var splitTokenEnds: [Int32: [UInt16]] = [:]
    private static let noEnd = UInt16.max
    private var budgetGroups: [Int32: [(finish: Int, words: [UInt64])]] = [:]
    private var finishPlans: [Int32: [Int]] = [:]
    private var spellings: [[UInt8]: [Int]] = [:]
    public private(set) var initial: Int32 = 0

    /// What masking cost this automaton so far (for the statistics).
    public internal(set) var counters = MaskCounters()

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
    /// How many states' masks are cached; the other caches are sized from it (lowered by tests).
    var maxCachedMasks = 2_048
    /// The fewest frames a cut keeps on its deepest stack: a JSON string's character, the
    /// repetition of characters and the string itself, so that inside a string only tokens
    /// that close it depend on what is below.
    static let localFrames = 3
    /// The most frames a cut keeps on its deepest stack.
    static let maxKeptFrames = 64
    static let context: Int32 = 1

    struct Mask {
        var words: [UInt64]
        /// The most bytes a shortest finish takes after any allowed token: a bound on its
        /// tokens that costs nothing, so a cap far off needs no tokenizing.
        var finishBytesAfter: Int32
        /// The cut state whose split the mask came from, the node it was cut below (0: not
        /// cut), and where its allowed tokens end (`uncut` gives the real states).
        var cut: Int32
        var cutBelow: Int32
        var cutEnds: [Int32]
        /// The dependent tokens allowed, and the real state each ends in.
        var dependentAllowed: [(token: Int32, end: Int32)]
        /// How many tokens a shortest finish takes after each cut end, and at most after any
        /// allowed token, once a cap near enough asked.
        var cutFinishes: [Int]?
        var maxTokensToFinishAfter: Int?
        /// A limit the walk hit: tokens past it are left out of the mask.
        var limit: GrammarError?
    }

    /// The tokens of a cut state: those allowed whatever the context, those that depend
    /// on it, and where the allowed ones end.
    struct Split {
        var allowed: [UInt64]
        /// Trie nodes whose tokens depend on the context: the subtrees under each node
        /// where a stack popped into it.
        var dependent: [Range<Int>]
        var ends: [Int32]
        var limit: GrammarError?
    }

    deinit {
        transitions.deallocate()
        poppedIntoContext.deallocate()
    }

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
            guard let n = stacks[Int(s)].filter({ $0 > Self.context }).min(by: { completion(node: $0) < completion(node: $1) }),
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
        // Many states finish with the same text (inside a string at every length, a number
        // at every digit): the tokenizer spells each text once.
        let text = shortestCompletion(s)
        let p: [Int]
        if let known = spellings[text] { p = known } else {
            p = trie.spelling(text) ?? []
            if spellings.count >= 1 << 14 { spellings.removeAll() }
            spellings[text] = p
        }
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
        guard s >= 0, budget < mask.finishBytesAfter, budget < maxTokensToFinishAfter(s) else { return .mask(mask.words) }
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
        _ = maxTokensToFinishAfter(s)
        let m = mask(s)
        let started = DispatchTime.now().uptimeNanoseconds
        defer { counters.buildNanoseconds += DispatchTime.now().uptimeNanoseconds - started }
        let wordCount = (trie.vocabularySize + 63) / 64
        var groups: [[UInt64]] = []
        var groupOfFinish: [Int: Int] = [:]
        func group(_ finish: Int) -> Int {
            if let g = groupOfFinish[finish] { return g }
            groups.append([UInt64](repeating: 0, count: wordCount))
            groupOfFinish[finish] = groups.count - 1
            return groups.count - 1
        }
        // The split's tokens by the cut end each reaches, that end's finish for all of them.
        let groupOfEnd = (m.cutFinishes ?? []).map(group)
        let ends = tokenEnds(m.cut, ends: m.cutEnds)
        for (token, end) in ends.enumerated() where end != Self.noEnd && Int(end) < groupOfEnd.count {
            groups[groupOfEnd[Int(end)]][token >> 6] |= 1 << UInt64(token & 63)
        }
        for (token, end) in m.dependentAllowed {
            groups[group(finishingTokens(end).count)][Int(token) >> 6] |= 1 << UInt64(token & 63)
        }
        var cumulative: [(finish: Int, words: [UInt64])] = []
        var running = [UInt64](repeating: 0, count: wordCount)
        if isAccepting(s) { for t in trie.endOfGeneration { running[t >> 6] |= 1 << UInt64(t & 63) } }
        for (f, g) in groupOfFinish.sorted(by: { $0.key < $1.key }) {
            for w in 0..<wordCount { running[w] |= groups[g][w] }
            cumulative.append((f, running))
        }
        if budgetGroups.count >= maxCachedMasks / 64 { budgetGroups.removeAll() }
        budgetGroups[s] = cumulative
        return cumulative
    }

    /// Per token, the index in `cutEnds` (the ends of cut state `s`'s split) of where `s`
    /// goes after it (`noEnd`: nowhere the split allows). Kept for up to 64 cut states that
    /// capped outputs reach near their end, walked again once dropped.
    private func tokenEnds(_ s: Int32, ends cutEnds: [Int32]) -> [UInt16] {
        if let known = splitTokenEnds[s] { return known }
        var index: [Int32: UInt16] = [:]
        for (i, end) in cutEnds.enumerated() where i < Int(Self.noEnd) { index[end] = UInt16(i) }
        let started = DispatchTime.now().uptimeNanoseconds
        var ends = [UInt16](repeating: Self.noEnd, count: trie.vocabularySize)
        walk(from: s, { token, end in ends[Int(token)] = index[end] ?? Self.noEnd })
        countWalk(since: started)
        if splitTokenEnds.count >= maxCachedMasks / 32 { splitTokenEnds.removeAll() }
        splitTokenEnds[s] = ends
        return ends
    }

    private func mask(_ s: Int32) -> Mask {
        if let m = masks[s] { return m }
        let started = DispatchTime.now().uptimeNanoseconds
        defer { counters.buildNanoseconds += DispatchTime.now().uptimeNanoseconds - started }
        limitHit = nil
        var m = Mask(words: [UInt64](repeating: 0, count: (trie.vocabularySize + 63) / 64), finishBytesAfter: 0,
                     cut: s, cutBelow: 0, cutEnds: [], dependentAllowed: [])
        if s >= 0 {
            do {
                let below = cutNode(s)
                let cut = below == 0 ? s : try state(Set(stacks[Int(s)].map { try reroot($0, above: below, onto: Self.context) }))
                let walked = splits[cut] == nil
                let split = self.split(cut)
                m.words = split.allowed
                m.limit = split.limit
                m.cut = cut
                m.cutBelow = below
                m.cutEnds = split.ends
                // A finish from a cut end is its own and then, at most, the cut frames'.
                let belowFinish = below == 0 ? 0 : completion(node: below)
                for end in split.ends { m.finishBytesAfter = max(m.finishBytesAfter, completion(end) + belowFinish) }
                // The dependent subtrees, walked from the real state after their prefix.
                var allowedEnds: [(token: Int32, end: Int32)] = []
                for nodes in split.dependent {
                    let token = trie.tokens[Int(trie.tokenStart[nodes.lowerBound])]
                    let prefix = trie.tokenBytes[Int(token)].prefix(Int(trie.depth[nodes.lowerBound]) - 1)
                    let from = next(s, bytes: prefix)
                    guard from >= 0 else { continue }
                    walk(from: from, nodes: nodes, { token, end in allowedEnds.append((token, end)) })
                }
                for (token, end) in allowedEnds {
                    m.words[Int(token) >> 6] |= 1 << UInt64(token & 63)
                    m.finishBytesAfter = max(m.finishBytesAfter, completion(end))
                }
                m.dependentAllowed = allowedEnds
                if !walked {
                    counters.splitMasks += 1
                    counters.splitMaskNanoseconds += DispatchTime.now().uptimeNanoseconds - started
                }
            } catch {
                m.limit = error as? GrammarError ?? .tooLarge("the grammar's automaton")
            }
            m.limit = m.limit ?? limitHit
            if isAccepting(s) { for t in trie.endOfGeneration { m.words[t >> 6] |= 1 << UInt64(t & 63) } }
        }
        if masks.count >= maxCachedMasks { masks.removeAll() }
        masks[s] = m
        return m
    }

    /// The most tokens a shortest finish takes after any token allowed in state `s`, worked
    /// out (tokenizing each end's finish) the first time a cap comes near.
    private func maxTokensToFinishAfter(_ s: Int32) -> Int {
        var m = mask(s)
        if let known = m.maxTokensToFinishAfter { return known }
        let started = DispatchTime.now().uptimeNanoseconds
        defer { counters.buildNanoseconds += DispatchTime.now().uptimeNanoseconds - started }
        let finishes = m.cutEnds.map { end in
            // A limit hit putting the cut frames back: the bound in bytes stands in.
            guard let real = m.cutBelow == 0 ? end : try? uncut(end, onto: m.cutBelow) else { return Int(m.finishBytesAfter) }
            return finishingTokens(real).count
        }
        m.cutFinishes = finishes
        m.maxTokensToFinishAfter = max(finishes.max() ?? 0, m.dependentAllowed.map { finishingTokens($0.end).count }.max() ?? 0)
        masks[s] = m
        return m.maxTokensToFinishAfter!
    }

    /// The node every stack of `s` is cut below (0: none is): the deepest that lies under
    /// all of them, but no deeper than `localFrames` under the deepest, so that a state in
    /// a string keeps the string (its characters and their repetition on one stack, the
    /// closing quote on another) and loses the rest.
    private func cutNode(_ s: Int32) -> Int32 {
        var below: Int32 = -1
        var deepest: Int32 = 0
        for n in stacks[Int(s)] {
            if below == 0 { return 0 }
            if nodeDepth[Int(n)] > nodeDepth[Int(deepest)] { deepest = n }
            var p = n == 0 ? 0 : nodeParent[Int(n)]
            if below < 0 { below = p; continue }
            var q = below
            while nodeDepth[Int(p)] > nodeDepth[Int(q)] { p = nodeParent[Int(p)] }
            while nodeDepth[Int(q)] > nodeDepth[Int(p)] { q = nodeParent[Int(q)] }
            while p != q { p = nodeParent[Int(p)]; q = nodeParent[Int(q)] }
            below = p
        }
        while nodeDepth[Int(deepest)] - nodeDepth[Int(below)] < Self.localFrames, below != 0 { below = nodeParent[Int(below)] }
        // Stacks that part near the root but run deep would be copied whole and shared by
        // nothing: such a state is walked as it is.
        if nodeDepth[Int(deepest)] - nodeDepth[Int(below)] > Self.maxKeptFrames { return 0 }
        return max(below, 0)
    }

    /// Stack `n` with its frames above node `below` put on node `onto` instead.
    private func reroot(_ n: Int32, above below: Int32, onto: Int32) throws -> Int32 {
        var positions: [Int32] = []
        var m = n
        while m != below {
            positions.append(nodePosition[Int(m)])
            m = nodeParent[Int(m)]
        }
        var top = onto
        for p in positions.reversed() { top = try node(parent: top, position: p) }
        return top
    }

    /// Cut state `s` on the frames under `below` again: the state of the real stacks.
    private func uncut(_ s: Int32, onto below: Int32) throws -> Int32 {
        var out = Set<Int32>(), visited = Set<Int32>()
        for n in stacks[Int(s)] {
            if n == Self.context {
                try expand(below, into: &out, visited: &visited, depth: 0)
                continue
            }
            var root = n
            while root > Self.context { root = nodeParent[Int(root)] }
            out.insert(root == Self.context ? try reroot(n, above: Self.context, onto: below) : n)
        }
        return try state(out)
    }

    /// The split of cut state `s`, walked on first use.
    private func split(_ s: Int32) -> Split {
        if let split = splits[s] { return split }
        let started = DispatchTime.now().uptimeNanoseconds
        defer { countWalk(since: started) }
        var split = Split(allowed: [UInt64](repeating: 0, count: (trie.vocabularySize + 63) / 64), dependent: [], ends: [])
        // End states repeat for almost every token (inside a string, all but a few end
        // in the same one): each is kept once, marked in an array by state id.
        var seen = [Bool](repeating: false, count: stacks.count + 64)
        limitHit = nil
        walk(from: s, { token, end in
            split.allowed[Int(token) >> 6] |= 1 << UInt64(token & 63)
            let e = Int(end)
            if e >= seen.count { seen += repeatElement(false, count: e + 64 - seen.count) }
            if !seen[e] {
                seen[e] = true
                split.ends.append(end)
            }
        }, dependent: { split.dependent.append($0) })
        split.limit = limitHit
        if splits.count >= maxCachedMasks / 4 { splits.removeAll() }
        splits[s] = split
        return split
    }

    private func countWalk(since started: UInt64) {
        counters.walks += 1
        counters.walkNanoseconds += DispatchTime.now().uptimeNanoseconds - started
    }

    /// Calls `body` with every token of trie nodes `nodes` (the whole trie, or the subtrees
    /// under one node, `s` being the state after that node's bytes) that can follow state
    /// `s`, and the state after it. Where a stack pops into the context, the tokens that end
    /// there are allowed (the frames cut off go on) and the longer ones under it go to
    /// `dependent` as one range of nodes: the frames cut off decide them. Transitions are
    /// read straight from the table; a byte not seen before in a state is computed (which
    /// may move the table) and the walk goes on. The callbacks must not build states.
    private func walk(from s: Int32, nodes: Range<Int>? = nil, _ body: (Int32, Int32) -> Void,
                      dependent: (Range<Int>) -> Void = { _ in }) {
        let range = nodes ?? 0..<trie.nodeCount
        guard !range.isEmpty else { return }
        var at = [Int32](repeating: 0, count: trie.maxDepth + 1)
        trie.byte.withUnsafeBufferPointer { byte in
        trie.depth.withUnsafeBufferPointer { depth in
        trie.subtreeEnd.withUnsafeBufferPointer { end in
        trie.tokenStart.withUnsafeBufferPointer { start in
        trie.tokens.withUnsafeBufferPointer { tokens in
        at.withUnsafeMutableBufferPointer { at in
            at[Int(depth[range.lowerBound]) &- 1] = s
            var table = transitions
            var flags = poppedIntoContext
            var i = range.lowerBound
            while i < range.upperBound {
                let d = Int(depth[i])
                let from = at[d &- 1]
                var t = table[Int(from) &* 256 &+ Int(byte[i])]
                if t == Self.unknown {
                    t = next(from, byte[i])
                    table = transitions
                    flags = poppedIntoContext
                }
                if t < 0 { i = Int(end[i]); continue }
                at[d] = t
                let first = Int(start[i]), last = Int(start[i &+ 1])
                if first < last { for k in first..<last { body(tokens[k], t) } }
                if flags[Int(t)] {
                    if i &+ 1 < Int(end[i]) { dependent((i &+ 1)..<Int(end[i])) }
                    i = Int(end[i])
                    continue
                }
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
        if n == 0 || n == Self.context { out.insert(n); return }
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
            let flags = UnsafeMutablePointer<Bool>.allocate(capacity: transitionCapacity * 2)
            flags.update(from: poppedIntoContext, count: stacks.count - 1)
            poppedIntoContext.deallocate()
            poppedIntoContext = flags
            transitionCapacity *= 2
        }
        (transitions + 256 * (stacks.count - 1)).initialize(repeating: Self.unknown, count: 256)
        (poppedIntoContext + stacks.count - 1).initialize(to: set.contains(Self.context))
        completions.append(-1)
        return s
    }

    private func computeNext(_ s: Int32, _ byte: UInt8) -> Int32 {
        do {
            var out = Set<Int32>(), visited = Set<Int32>()
            for n in stacks[Int(s)] where n > Self.context {
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

/// What masking cost: time spent computing and applying masks, and how many tokens were
/// masked; and, part of it, the time spent on what was not cached yet (a state's first mask,
/// its finishes once a cap is near, a capped state's groups). Of that, the walks of the
/// vocabulary (a cut state's split, a capped state's groups), and the states' first masks
/// built from a split walked before: what a new state costs when its top frames were seen.
public struct MaskCounters: Sendable {
    public var maskedTokens = 0
    public var maskNanoseconds: UInt64 = 0
    public var buildNanoseconds: UInt64 = 0
    public var walks = 0
    public var walkNanoseconds: UInt64 = 0
    public var splitMasks = 0
    public var splitMaskNanoseconds: UInt64 = 0

    static func += (a: inout MaskCounters, b: MaskCounters) {
        a.maskedTokens += b.maskedTokens
        a.maskNanoseconds += b.maskNanoseconds
        a.buildNanoseconds += b.buildNanoseconds
        a.walks += b.walks
        a.walkNanoseconds += b.walkNanoseconds
        a.splitMasks += b.splitMasks
        a.splitMaskNanoseconds += b.splitMaskNanoseconds
    }
}
