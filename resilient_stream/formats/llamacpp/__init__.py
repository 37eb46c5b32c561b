"""llama.cpp's own server (``llama-server``): its native ``/completion`` stream.

Its capability that OpenAI's API lacks: a prompt may be an array of token ids
(mixed with strings), and the stream can return each generated token's id
(``return_tokens``) and the running count (``tokens_predicted``). So a resume
re-prompts with the exact ids generated so far: no re-tokenization at the seam.
See ``planner.py`` (token-exact completions), ``ledger.py`` (which ids are
known) and ``template.py`` (chats through a rendered chat template).
"""
