# Copy of examples/async-chat.py from the official ollama-python repository
# (https://github.com/ollama/ollama-python, MIT licence), reproduced for
# resilient-stream's drop-in test. The ONLY change is the import line:
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
