# Rewritten from memory after examples/async-generate.py of the official ollama-python
# repository (MIT licence) for resilient-stream's drop-in test: no network here
# to copy it. Checked against upstream: same calls and printing; the model name
# may differ. The import line is the one intended change:
#   was:  import ollama
#   now:  from resilient_stream import ollama
import asyncio

from resilient_stream import ollama


async def main():
  client = ollama.AsyncClient()
  response = await client.generate('gemma3', 'Why is the sky blue?')
  print(response['response'])


if __name__ == '__main__':
  try:
    asyncio.run(main())
  except KeyboardInterrupt:
    print('\nGoodbye!')
