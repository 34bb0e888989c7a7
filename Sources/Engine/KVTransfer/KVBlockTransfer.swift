import Models

extension EngineCore {
    /// The layout of this engine's blocks.
    var kvLayout: KVLayout { KVLayout(layers: cache.layers, rowWidth: cache.rowWidth, blockSize: cache.blockSize) }

    /// The prompt blocks that `chunks` completed for requests that export them, read out of
    /// the cache right after the step that wrote them (while their sequences hold them).
    func exportBlocks(of chunks: [ScheduledChunk]) -> [EngineEvent] {
        var events: [EngineEvent] = []
        for chunk in chunks {
            let s = chunk.sequence, state = s.request
            guard state.request.exportsKV, s.index == 0 else { continue }
            let full = min(s.computed, s.promptCount) / cache.blockSize
            guard state.exportedBlocks < full else { continue }
            var blocks: [KVBlock] = []
            for i in state.exportedBlocks..<full {
                let tokens = s.tokens[(i * cache.blockSize)..<((i + 1) * cache.blockSize)]
                let name = KVBlock.name(parent: state.lastExportedName, tokens: tokens)
                let values = [Float16](unsafeUninitializedCapacity: kvLayout.valuesPerBlock) { buffer, count in
                    cache.read(table: [s.blockTable[i]], positions: cache.blockSize, into: buffer.baseAddress!)
                    count = buffer.count
                }
                blocks.append(KVBlock(name: name, tokens: Array(tokens), values: values))
                state.lastExportedName = name
            }
            state.exportedBlocks = full
            statistics.exportedKVBlocks += blocks.count
            let output = GenerationOutput(index: 0, text: "", tokens: [], logprobs: [], kvBlocks: blocks, finishReason: nil, metrics: nil)
            events.append(EngineEvent(request: state.id, output: output, finished: false))
        }
        return events
    }

    /// Writes blocks another worker computed into free blocks and names them in the prefix
    /// cache, where the request that continues their prompt finds them as if it had computed
    /// them. Blocks already cached are skipped; when no block is free, the rest are dropped
    /// (that request computes them). The blocks stay free and cached, least recently used
    /// last.
    func importBlocks(_ blocks: [KVBlock]) throws -> KVImport {
        guard scheduler.blocks.prefixCaching else {
            throw EngineError.invalidConfiguration("importing KV blocks needs the prefix cache, which this engine runs without")
        }
        let layout = kvLayout
        var result = KVImport()
        for (i, block) in blocks.enumerated() {
            guard block.tokens.count == layout.blockSize, block.values.count == layout.valuesPerBlock else {
                throw EngineError.invalidConfiguration("a KV block of \(block.tokens.count) tokens and \(block.values.count) values does not fit blocks of \(layout)")
            }
            if scheduler.blocks.isCached(block.name) {
                result.alreadyCached += 1
                continue
            }
            guard let b = scheduler.blocks.allocate() else {
                result.dropped = blocks.count - i
                break
            }
            block.values.withUnsafeBufferPointer { cache.write(table: [b], positions: layout.blockSize, from: $0.baseAddress!) }
            scheduler.blocks.register(b, hash: block.name)
            scheduler.blocks.release(b)
            result.imported += 1
        }
        statistics.importedKVBlocks += result.imported
        return result
    }
}
