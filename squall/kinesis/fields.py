"""The stream a Kinesis component reads or writes (name or ARN, region, endpoint), as pydantic fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from squall import aws


class StreamFields(BaseModel):
    """The stream a Kinesis component reads or writes: name or ARN, region, endpoint (one
    definition for the spout, the sink and the Kinesis dead letter)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    stream: aws.StreamName = Field(description="Stream name or ARN.")
    region: aws.OptionalSetting = Field(
        None,
        description="AWS region (default: from the ARN, AWS_REGION, "
        "AWS_DEFAULT_REGION, else us-east-1).",
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="Kinesis endpoint (local testing).")
