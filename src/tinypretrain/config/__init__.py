"""Settings, resolved once: model shapes and presets, PretrainConfig and SFTConfig, recipes, and the order
in which given values, recipes, budgets, the base and devices fill each field."""
