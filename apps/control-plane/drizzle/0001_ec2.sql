-- Orgs whose tenant runs the canary image (and, on EC2, in the canary account).
ALTER TABLE cp_orgs ADD COLUMN is_canary boolean NOT NULL DEFAULT false;

-- The AMI each runtime boots from in each region (EC2 backends). No row: EC2_AMI, else a non-retryable error.
-- Operators edit it with SQL for now (docs/backends/ec2.md).
CREATE TABLE cp_thin_ami_pins (
  runtime text NOT NULL,
  region text NOT NULL,
  ami_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT cp_thin_ami_pins_pkey PRIMARY KEY (runtime, region),
  CONSTRAINT cp_thin_ami_pins_ami_id_check CHECK (ami_id ~ '^ami-[0-9a-f]{8,17}$')
);
