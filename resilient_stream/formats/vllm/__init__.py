"""vLLM's OpenAI-compatible server with ``return_token_ids``: token-exact resume.

vLLM (since its ``return_token_ids`` request field) streams the ids of every
engine step beside the text (``choices[0].token_ids``) and the prompt's ids on
the first chunk (``prompt_token_ids``), and ``/v1/completions`` takes a prompt
as a list of token ids. So a resume re-prompts with ``prompt ids + generated
ids``: nothing is re-tokenized at the seam. See ``types.py`` (the chunks, read
from vLLM's serving code), ``framing.py`` (their decoder) and ``planner.py``
(completions and chats; the ids ledger is ``formats/llamacpp/ledger.py``'s).
"""
