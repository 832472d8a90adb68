"""The Channels 4 WebSocket consumers (async, as Channels 4 recommends), for daphne."""

from channels.generic.websocket import AsyncWebsocketConsumer

GROUP = "bench"


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class Broadcast(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(
            GROUP, {"type": "bench.frame", "text": text_data, "bytes": bytes_data}
        )

    async def bench_frame(self, event):
        await self.send(text_data=event["text"], bytes_data=event["bytes"])

    async def disconnect(self, code):
        await self.channel_layer.group_discard(GROUP, self.channel_name)
