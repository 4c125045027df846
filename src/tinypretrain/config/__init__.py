"""Settings, resolved once: model shapes and presets, the PretrainConfig dataclass, recipes, and the order
in which given values, recipes, budgets and devices fill each field."""
