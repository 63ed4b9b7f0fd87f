-- kinesis.scheduler - the former name of kinesis.runtime's run/spawn/sleep;
-- kept as an alias so code written against it keeps working.
return require "kinesis.runtime"
