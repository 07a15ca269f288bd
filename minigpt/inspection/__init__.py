"""Looking inside a model: attention maps and head statistics (`maps`), head importance by ablation
(`ablation`), heatmaps (`heatmaps`) and the report with its HTML page (`report`). No Lightning here."""
