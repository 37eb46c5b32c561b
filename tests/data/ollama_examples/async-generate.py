# Copy of examples/async-generate.py from the official ollama-python repository
# (https://github.com/ollama/ollama-python, MIT licence), reproduced for
# resilient-stream's drop-in test. The ONLY change is the import line:
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
