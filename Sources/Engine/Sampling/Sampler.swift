import Foundation
import Kernels

/// A token the sampler chose and the probability it had in the distribution it was drawn
/// from (1 for greedy sampling).
public struct SampledToken: Equatable, Sendable {
    public let token: Int
    public let probability: Float
}

/// Chooses tokens from logits through a chain: logit bias, then penalties, then the output
/// constraint (a grammar), each a `LogitsProcessor`; then top-k, top-p and min-p filtering,
/// temperature and a draw from a seeded generator (the order of llama.cpp's default chain).
public struct Sampler {
    public let parameters: SamplingParameters
    private var random: SplitMix64
    private var processors: [any LogitsProcessor] = []
    /// The unnormalised probabilities of the last draw, kept to reuse their memory.
    private var weights: [Float] = []

    /// A sampler for `parameters`; `constraint`, when given, restricts which tokens may come
    /// next (it runs after the penalties, before the filters).
    public init(_ parameters: SamplingParameters, constraint: (any LogitsProcessor)? = nil) throws {
        try parameters.validate()
        self.parameters = parameters
        random = SplitMix64(seed: parameters.seed ?? UInt64.random(in: .min ... .max))
        if !parameters.logitBias.isEmpty { processors.append(LogitBias(bias: parameters.logitBias)) }
        let p = parameters
        if p.repetitionPenalty != 1 || p.presencePenalty != 0 || p.frequencyPenalty != 0 {
            processors.append(RepetitionPenalties(repetition: p.repetitionPenalty, presence: p.presencePenalty,
                                                  frequency: p.frequencyPenalty, window: p.penaltyWindow))
        }
        if let constraint { processors.append(constraint) }
    }

    /// Picks the next token given the logits of the last position and the tokens so far
    /// (prompt and generated), which the penalties look at. The caller tells the sampler
    /// which token the sequence keeps through `accept`.
    public mutating func sample(_ logits: [Float], history: [Int]) -> SampledToken {
        var logits = logits
        switch candidates(&logits, history: history) {
        case .greedy(let token): return SampledToken(token: token, probability: 1)
        case .all: return draw(from: logits.indices, logits: logits)
        case .some(let ids): return draw(from: ids, logits: logits)
        }
    }

    /// The sequence kept `token` (sampled, or a drafted token that verification accepted).
    public mutating func accept(_ token: Int) {
        for i in processors.indices { processors[i].accept(token) }
    }

    /// Why a processor of the chain can no longer do its job, when one cannot.
    public var failure: (any Error)? {
        for p in processors { if let f = p.failure { return f } }
        return nil
    }

    /// The last `count` kept tokens were taken back.
    public mutating func rollback(_ count: Int) {
        for i in processors.indices { processors[i].rollback(count) }
    }

    /// The distribution `sample` draws from: each candidate token with its probability
    /// (after bias, penalties, filters and temperature; they sum to 1). Greedy sampling is
    /// the most likely token with probability 1. Speculative verification compares drafted
    /// tokens against it.
    public mutating func distribution(_ logits: [Float], history: [Int]) -> [(token: Int, probability: Float)] {
        var logits = logits
        switch candidates(&logits, history: history) {
        case .greedy(let token): return [(token, 1)]
        case .all: return normalizedWeights(of: logits.indices, logits: logits)
        case .some(let ids): return normalizedWeights(of: ids, logits: logits)
        }
    }

    /// A uniform draw from [0, 1) off this sampler's generator.
    public mutating func uniform() -> Float {
        Float(Double(random.next() >> 11) / Double(1 << 53))
    }

    private enum Candidates {
        /// Temperature 0: this token, always.
        case greedy(Int)
        /// No filter: every token of the vocabulary.
        case all
        /// What top-k, top-p and min-p leave, most likely first.
        case some([Int])
    }

    /// Runs the processors over `logits` and returns the tokens a draw chooses among.
    private mutating func candidates(_ logits: inout [Float], history: [Int]) -> Candidates {
        for i in processors.indices { processors[i].process(&logits, history: history) }
        if parameters.temperature == 0 { return .greedy(Self.argmax(logits)) }

        // No filter at all (OpenAI's defaults): draw from the whole distribution, no sorting.
        if parameters.topK == 0 && parameters.topP >= 1 && parameters.minP == 0 { return .all }
        var candidates = likelyFirst(logits)
        // Probabilities before temperature, normalised over the candidates (after top-k, as
        // llama.cpp's top-p and min-p see them).
        var probabilities = Self.softmax(candidates.map(\.logit))
        if parameters.topP < 1 {
            var cumulative: Float = 0
            var keep = candidates.count
            for (i, p) in probabilities.enumerated() {
                cumulative += p
                if cumulative >= parameters.topP { keep = i + 1; break }
            }
            candidates.removeLast(candidates.count - keep)
            probabilities.removeLast(probabilities.count - keep)
        }
        if parameters.minP > 0, let top = probabilities.first {
            let keep = probabilities.prefix { $0 >= parameters.minP * top }.count
            candidates.removeLast(candidates.count - max(keep, 1))
        }
        return .some(candidates.map(\.id))
    }

    /// The candidates for top-k, top-p and min-p, most likely first (ties: lower id first).
    /// Without top-k, only tokens whose probability is within e^-30 of the most likely one
    /// can matter (their total is under 49,152 · e^-30 ≈ 5e-9 of the top token's), so the
    /// rest are not sorted; when top-p asks for more than the kept tokens hold, all are.
    private func likelyFirst(_ logits: [Float]) -> [(id: Int, logit: Float)] {
        if parameters.topK > 0 {
            return TopK.indices(of: logits, k: parameters.topK).map { (id: $0, logit: logits[$0]) }
        }
        let top = logits.max() ?? 0
        let floor = top - 30
        var likely: [(id: Int, logit: Float)] = []
        var keptMass: Double = 0, totalMass: Double = 0
        for (id, logit) in logits.enumerated() {
            let w = exp(Double(logit - top))
            totalMass += w
            if logit >= floor {
                likely.append((id, logit))
                keptMass += w
            }
        }
        if parameters.topP < 1 && keptMass / totalMass < Double(parameters.topP) {
            likely = logits.enumerated().map { (id: $0.offset, logit: $0.element) }
        }
        likely.sort { $0.logit != $1.logit ? $0.logit > $1.logit : $0.id < $1.id }
        return likely
    }

    /// A draw from the softmax of `logits / temperature` over `ids`, in their order. Over the
    /// whole vocabulary (OpenAI's defaults) this runs for every token of every request, so
    /// the exponentials are computed once, as a vector.
    private mutating func draw<C: Collection>(from ids: C, logits: [Float]) -> SampledToken where C.Element == Int {
        let total = computeWeights(of: ids, logits: logits)
        let u = uniform() * total
        var cumulative: Float = 0
        for (w, id) in zip(weights, ids) {
            cumulative += w
            if u < cumulative { return SampledToken(token: id, probability: w / total) }
        }
        // Rounding left u at or past the last sum: the last candidate.
        var last = ids.first!
        for id in ids { last = id }
        return SampledToken(token: last, probability: (weights.last ?? total) / total)
    }

    private mutating func normalizedWeights<C: Collection>(of ids: C, logits: [Float]) -> [(token: Int, probability: Float)] where C.Element == Int {
        let total = computeWeights(of: ids, logits: logits)
        return zip(ids, weights).map { ($0, $1 / total) }
    }

    /// Fills `weights` with `exp((logit - max) / temperature)` of each of `ids`; returns their sum.
    private mutating func computeWeights<C: Collection>(of ids: C, logits: [Float]) -> Float where C.Element == Int {
        let scale = 1 / parameters.temperature
        let m = ids.reduce(-Float.infinity) { max($0, logits[$1]) }
        weights.removeAll(keepingCapacity: true)
        for id in ids { weights.append((logits[id] - m) * scale) }
        weights.withUnsafeMutableBufferPointer { Activation.exponentiate($0.baseAddress!, count: $0.count) }
        var total: Float = 0
        for w in weights { total += w }
        return total
    }

    public static func argmax(_ logits: [Float]) -> Int {
        logits.withUnsafeBufferPointer { Argmax.index($0) }
    }

    static func softmax(_ x: [Float]) -> [Float] {
        guard let m = x.max() else { return [] }
        let e = x.map { expf($0 - m) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }
}

/// SplitMix64 (Steele et al. 2014): small, fast, and the same sequence on every platform.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
