"""Looking inside a model: attention maps and head statistics (`maps`), head importance by ablation
(`ablation`), the logit lens (`lens`), activation patching (`patching`), heatmaps (`heatmaps`, and
`circuit_figures` for the lens and patching) and the report with its HTML page (`report`). No Lightning here."""
