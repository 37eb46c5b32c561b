# Rewritten from memory after examples/async-chat.py of the official ollama-python
# repository (MIT licence) for resilient-stream's drop-in test: no network here
# to copy it. Checked against upstream: same calls and printing; the model name
# may differ, and upstream now writes `import ollama` / `ollama.AsyncClient()`
# where this keeps the `from ollama import AsyncClient` form of an earlier
# version. The import line is the one intended change:
#   was:  from ollama import AsyncClient
#   now:  from resilient_stream.ollama import AsyncClient
import asyncio

from resilient_stream.ollama import AsyncClient


async def main():
  messages = [
    {
      'role': 'user',
      'content': 'Why is the sky blue?',
    },
  ]

  client = AsyncClient()
  response = await client.chat('gemma3', messages=messages)
  print(response['message']['content'])


if __name__ == '__main__':
  asyncio.run(main())
