pub fn restore(){} pub struct Restored; pub struct RestoreStats;
