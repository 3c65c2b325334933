-- Computer use: the model computer-use subagents run on (at most one is marked), and for
-- Anthropic models, the version of Anthropic's native computer tool the model takes
-- (`computer_20250124`, `computer_20251124`, `computer_toolset_20260801`; NULL: the `computer`
-- tool is declared as a plain function).
ALTER TABLE model_configs ADD COLUMN for_computer_use BIGINT NOT NULL DEFAULT 0;
ALTER TABLE model_configs ADD COLUMN computer_tool TEXT;
