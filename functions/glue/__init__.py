"""The glue Lambda: DynamoDB Streams records -> change events on the bus's Kinesis stream."""
